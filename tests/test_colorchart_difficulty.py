"""The colour charts' continuous difficulty (issue 19): levels, the calibrated ``paper`` preset,
clutter and glyph deformation keep the plates' colour invariants; the linear probe."""

from __future__ import annotations

import numpy as np
import pytest

from sepconv.data.colorchart import cache as cache_module
from sepconv.data.colorchart.colour import AXES, dichromat_delta_e, srgb_decode
from sepconv.data.colorchart.generate import ChartSpec
from sepconv.data.colorchart.glyphs import CLASS_PRESETS
from sepconv.data.colorchart.packing import DotLayout, pack_pool_layout
from sepconv.data.colorchart.plate import (
    DIFFICULTIES,
    LEVEL_0,
    LEVEL_1,
    PAPER_FAINT,
    PAPER_LEVEL,
    PlateDebug,
    PlateStyle,
    difficulty_at,
    get_difficulty,
    render_plate,
)
from sepconv.data.colorchart.probe import linear_probe
from sepconv.errors import SepconvError


@pytest.fixture(scope="module")
def pool() -> list[DotLayout]:
    return [pack_pool_layout(0, k, 128) for k in range(8)]


def plates(difficulty: str, pool: list[DotLayout], count: int, faint: float | None = None) -> list[PlateDebug]:
    style = PlateStyle(CLASS_PRESETS["mixed10"], difficulty=difficulty, render_scale=4, faint=faint)
    out = []
    for idx in range(count):
        plate = render_plate(style, 0, idx % 10, idx, pool, return_debug=True)
        assert isinstance(plate, PlateDebug)
        out.append(plate)
    return out


def test_levels_run_from_standard_to_the_hardest_end() -> None:
    zero, one = difficulty_at(0.0), difficulty_at(1.0)
    for field in ("delta_e", "side", "max_rotation_deg", "hue_jitter", "lightness", "centre_jitter", "clutter"):
        assert getattr(zero, field) == getattr(DIFFICULTIES["standard"], field) == getattr(LEVEL_0, field)
        assert getattr(one, field) == getattr(LEVEL_1, field)
    levels = [difficulty_at(x) for x in np.linspace(0, 1, 5)]
    for a, b in zip(levels, levels[1:]):  # every knob moves one way: harder
        assert b.centre_jitter > a.centre_jitter and b.shear > a.shear and b.clutter > a.clutter
        assert b.delta_e[0] < a.delta_e[0] and b.side[0] < a.side[0]
    assert DIFFICULTIES["paper"].level == PAPER_LEVEL and DIFFICULTIES["paper"].faint == PAPER_FAINT
    assert get_difficulty("paper") == DIFFICULTIES["paper"]
    with pytest.raises(ValueError):
        difficulty_at(1.5)


def test_level_zero_draws_the_standard_plates(pool: list[DotLayout]) -> None:
    for a, b in zip(plates("standard", pool, 10), plates("0", pool, 10)):
        assert np.array_equal(a.image, b.image) and not b.clutter.any()


def test_specs_name_levels_canonically_and_key_them_by_their_knobs() -> None:
    assert ChartSpec(difficulty="0.50").difficulty == "0.5"
    # `paper` is level PAPER_LEVEL with its contrast spread: the same set as the explicit spec.
    assert ChartSpec(difficulty=f"{PAPER_LEVEL}", faint=PAPER_FAINT).key() == ChartSpec(difficulty="paper").key()
    assert ChartSpec(difficulty=f"{PAPER_LEVEL}").key() == ChartSpec(difficulty="paper", faint=0.0).key()
    assert ChartSpec(difficulty="0.7").key() != ChartSpec(difficulty="0.71").key()
    assert cache_module.parse_options("paper").difficulty == "paper"
    assert cache_module.parse_options("difficulty=0.25,digits").difficulty == "0.25"
    for bad in ("difficulty=1.2", "difficulty=easy", "difficulty=-0.1"):
        with pytest.raises(SepconvError, match="difficulty"):
            cache_module.parse_options(bad)


def test_faint_zero_leaves_every_plate_and_key_as_before(pool: list[DotLayout]) -> None:
    for a, b in zip(plates("0.5", pool, 12), plates("0.5", pool, 12, faint=0.0)):
        assert np.array_equal(a.image, b.image) and a.pair.delta_e == b.pair.delta_e
    for difficulty in ("standard", "hard", "0.5", "0.3"):
        assert ChartSpec(difficulty=difficulty).key() == ChartSpec(difficulty=difficulty, faint=0.0).key()
        assert ChartSpec(difficulty=difficulty).key() != ChartSpec(difficulty=difficulty, faint=0.5).key()
    # Hash keys of sets made before the knob existed (their caches must stay valid).
    assert ChartSpec().key() == "23177e3c8ddeab29"
    assert ChartSpec(difficulty="0.5").key() == ChartSpec(difficulty="paper", faint=0).key() == "297049206605c726"


def test_faint_spreads_each_plates_contrast_down_to_the_threshold(pool: list[DotLayout]) -> None:
    faint = 0.9
    low, high = get_difficulty("paper").delta_e
    steps = np.array([p.pair.delta_e for p in plates("paper", pool, 80, faint=faint)])
    assert steps.min() >= low * (1 - faint) - 1e-3 and steps.max() <= high + 1e-3
    # Uniform factors on [0.1, 1]: about half the plates fall below the plain preset's smallest step,
    # and some near the just-noticeable difference (ΔE 2.3-4.7).
    assert 0.3 <= float(np.mean(steps < low)) <= 0.9
    assert steps.min() < 2 * low * (1 - faint)
    # The contrast has its own stream: geometry, layout and the figure mask are the plain preset's.
    for a, b in zip(plates("paper", pool, 6), plates("paper", pool, 6, faint=faint)):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.figure, b.figure)
        assert a.pair.axis == b.pair.axis and not np.array_equal(a.image, b.image)


def test_faint_is_an_option_of_the_data_spec() -> None:
    spec = cache_module.parse_options("paper,faint=0.8")
    assert spec.faint == 0.8 and spec.style().preset.faint == 0.8 and spec.style().preset.level == PAPER_LEVEL
    assert spec.key() == cache_module.parse_options("difficulty=0.5,faint=0.8").key()
    for bad in ("faint=1", "faint=-0.2", "faint=x", "faint=nan"):
        with pytest.raises(SepconvError, match="faint"):
            cache_module.parse_options(bad)


@pytest.mark.parametrize("difficulty", ["paper", "1"])
def test_hard_levels_keep_the_plates_invariants(difficulty: str, pool: list[DotLayout]) -> None:
    preset = get_difficulty(difficulty)
    seen_clutter = 0
    moved = []
    for plate in plates(difficulty, pool, 60):
        assert 0.03 <= plate.figure.mean() <= 0.45
        assert not (plate.clutter & plate.figure).any()
        ground = ~plate.figure & ~plate.clutter
        linear = srgb_decode(plate.dot_colours)
        y = linear @ np.array([0.2126, 0.7152, 0.0722])
        # Figure, ground and clutter are equally luminous for a normal observer...
        for part in (plate.figure, plate.clutter):
            if part.any():
                assert abs(y[part].mean() - y[ground].mean()) <= 0.03
        # ...and the dichromat sees neither the figure nor the clutter.
        for part in (plate.figure, plate.clutter):
            if part.any():
                assert float(dichromat_delta_e(linear[part].mean(0), linear[ground].mean(0), plate.pair.axis)) < 3.0
        seen_clutter += int(plate.clutter.any())
        moved.append(np.hypot(*(np.asarray(plate.placement.centre) - 64.0)))
        low = preset.delta_e[0] * (1 - preset.faint)  # `paper` spreads each plate's contrast
        assert low - 1e-3 <= plate.pair.delta_e <= preset.delta_e[1] + 1e-3
    assert seen_clutter > 30  # most plates carry clutter at these levels
    assert max(moved) > 0.06 * 0.47 * 128 * np.sqrt(2)  # glyphs leave the standard's small box
    assert {p.pair.axis for p in plates(difficulty, pool, 12)} <= set(AXES)


def test_the_linear_probe_reads_hue_not_lightness(tmp_path, monkeypatch) -> None:
    from sepconv.data import get_dataset

    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path))
    spec = "colorchart:n=400,render_scale=2,pool=4"
    train, test = get_dataset(spec, train=True), get_dataset(spec, train=False)
    result = linear_probe(
        train.images.numpy().transpose(0, 2, 3, 1),
        train.labels.numpy(),
        test.images.numpy().transpose(0, 2, 3, 1),
        test.labels.numpy(),
    )
    assert result["chance"] == pytest.approx(0.1)
    assert result["chroma_test_accuracy"] > 0.5 > result["luminance_test_accuracy"] + 0.2
