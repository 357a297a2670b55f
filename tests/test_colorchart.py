"""The colour-chart generator (spec spec 01 (colour-chart data set) §8, plus the issue's
luminance requirement): determinism, splits, packing, colour invariants, files, CLI and cache."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sepconv.data import get_dataset
from sepconv.data.cifar import read_pickle
from sepconv.data.colorchart import cache as cache_module
from sepconv.data.colorchart import generate as generate_module
from sepconv.data.colorchart.colour import (
    AXES,
    AXIS_CONE,
    PAIR_BOX,
    RGB_TO_LMS,
    confusion_direction,
    delta_e76,
    dichromat_delta_e,
    relative_luminance,
    sample_pair,
    srgb_decode,
    srgb_encode,
)
from sepconv.data.colorchart.generate import ChartSpec, generate_colorchart, parse_classes
from sepconv.data.colorchart.glyphs import CLASS_PRESETS, GLYPHS, GlyphPlacement, glyph_mask
from sepconv.data.colorchart.packing import DotLayout, pack_dots, pack_dots_reference, pack_pool_layout
from sepconv.data.colorchart.plate import DIFFICULTIES, PlateDebug, PlateStyle, render_plate
from sepconv.errors import SepconvError

from .conftest import assert_one_line_error

# The spec's test fixture: 20 plates per class, render scale 4 (128 px), a pool of 16 layouts.
FIXTURE = ChartSpec(n=200, render_scale=4, layout_pool_size=16)
BATCHES = [f"data_batch_{b}" for b in range(1, 8)] + [f"test_batch_{b}" for b in range(1, 4)]
FILES = [*BATCHES, "batches.meta", "preview.png"]


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture written three times: in-process, with 2 workers, and with another seed."""
    roots = {}
    for name, spec, workers in (
        ("a", FIXTURE, 1),
        ("b", FIXTURE, 2),
        ("seed1", ChartSpec(n=200, render_scale=4, layout_pool_size=16, seed=1), 1),
    ):
        roots[name] = tmp_path_factory.mktemp(name)
        generate_colorchart(roots[name], spec, workers=workers)
    return roots


@pytest.fixture(scope="module")
def fixture_pool() -> list[DotLayout]:
    return [
        pack_pool_layout(FIXTURE.seed, k, FIXTURE.style().render_size)
        for k in range(FIXTURE.layout_pool_size)
    ]


# ---- determinism, splits, files ----------------------------------------------------------------


def test_same_arguments_give_byte_identical_files_whatever_the_workers(charts: dict[str, Path]) -> None:
    for name in FILES:
        assert (charts["a"] / name).read_bytes() == (charts["b"] / name).read_bytes(), name


def test_another_seed_gives_other_plates(charts: dict[str, Path]) -> None:
    for name in BATCHES:
        a = read_pickle(charts["a"] / name)["data"]
        b = read_pickle(charts["seed1"] / name)["data"]
        assert a.shape == b.shape
        assert np.mean(a != b) > 0.5, name  # not a few pixels: different plates


def test_splits_have_exact_class_balance_and_disjoint_indices(charts: dict[str, Path]) -> None:
    per_class: dict[str, dict[str, set[int]]] = {"train": {}, "test": {}}
    names = list(CLASS_PRESETS["mixed10"])
    for name in BATCHES:
        batch = read_pickle(charts["a"] / name)
        split = "train" if name.startswith("data") else "test"
        assert batch["data"].shape == (20, 3 * 32 * 32) and batch["data"].dtype == np.uint8
        assert np.bincount(batch["labels"], minlength=10).tolist() == [2] * 10
        assert len(batch["axes"]) == 20 and set(batch["axes"]) <= set(AXES)
        for label, filename in zip(batch["labels"], batch["filenames"]):
            cls, idx = filename.removesuffix(".png").rsplit("_", 1)
            assert cls == names[label]
            per_class[split].setdefault(cls, set()).add(int(idx))
    for cls in names:
        assert per_class["train"][cls] == set(range(14)), cls  # 7/10 of 20 per class
        assert per_class["test"][cls] == set(range(14, 20)), cls
    meta = read_pickle(charts["a"] / "batches.meta")
    assert meta["label_names"] == names and meta["num_cases_per_batch"] == 20


def test_batches_are_shuffled_not_sorted_by_class(charts: dict[str, Path]) -> None:
    labels = read_pickle(charts["a"] / "data_batch_1")["labels"]
    assert labels != sorted(labels)


def test_cifar_loader_reads_the_files_and_pixels_match_the_renderer(
    charts: dict[str, Path], fixture_pool: list[DotLayout]
) -> None:
    train = get_dataset(f"cifar10:{charts['a']}", train=True)
    test = get_dataset(f"cifar10:{charts['a']}", train=False)
    assert tuple(train.images.shape) == (140, 3, 32, 32) and tuple(test.images.shape) == (60, 3, 32, 32)
    assert train.class_names == list(CLASS_PRESETS["mixed10"])
    assert np.bincount(train.labels.numpy()).tolist() == [14] * 10
    assert np.bincount(test.labels.numpy()).tolist() == [6] * 10
    # Normalisation statistics come from the meta and really are those of the training images.
    pixels = train.images.double().div(255)
    assert np.allclose(train.mean, pixels.mean(dim=(0, 2, 3)).numpy(), atol=1e-9)
    assert np.allclose(train.std, pixels.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-9)
    # Row k of the files is the plate its file name says (class, sample index).
    batch = read_pickle(charts["a"] / "test_batch_2")
    style = FIXTURE.style()
    for k in (0, 7, 19):
        cls, idx = batch["filenames"][k].removesuffix(".png").rsplit("_", 1)
        image = render_plate(style, 0, style.classes.index(cls), int(idx), fixture_pool)
        assert np.array_equal(batch["data"][k].reshape(3, 32, 32).transpose(1, 2, 0), image)
        assert np.array_equal(test.images[20 + k].permute(1, 2, 0).numpy(), image)


def test_existing_identical_set_is_skipped_unless_forced(tmp_path: Path) -> None:
    spec = ChartSpec(n=100, image_size=16, render_scale=2, layout_pool_size=2)
    first = generate_colorchart(tmp_path, spec)
    assert not first.skipped
    before = (tmp_path / "data_batch_1").stat().st_mtime_ns
    assert generate_colorchart(tmp_path, spec).skipped
    assert (tmp_path / "data_batch_1").stat().st_mtime_ns == before
    assert not generate_colorchart(tmp_path, spec, force=True).skipped
    other = generate_colorchart(
        tmp_path, ChartSpec(n=100, image_size=16, render_scale=2, layout_pool_size=2, seed=5)
    )
    assert not other.skipped  # another seed is another data set


def test_interrupted_rewrite_of_a_folder_leaves_no_meta_vouching_for_it(tmp_path: Path, monkeypatch) -> None:
    spec = ChartSpec(n=100, image_size=16, render_scale=2, layout_pool_size=2)
    generate_colorchart(tmp_path, spec)
    assert (tmp_path / "batches.meta").exists()

    def interrupted(spec, plates, workers=1, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "render_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_colorchart(
            tmp_path, ChartSpec(n=100, image_size=16, render_scale=2, layout_pool_size=2, seed=9)
        )
    assert not (tmp_path / "batches.meta").exists()
    with pytest.raises(SepconvError):
        get_dataset(f"cifar10:{tmp_path}")


# ---- packing (spec §4, §8.3) -------------------------------------------------------------------


def _assert_valid_packing(layout: DotLayout) -> None:
    c, r = layout.centres, layout.radii
    d = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    need = r[:, None] + r[None, :] + layout.gap
    off_diagonal = ~np.eye(len(r), dtype=bool)
    assert np.all(d[off_diagonal] >= need[off_diagonal] - 1e-9)
    assert np.all(np.hypot(*(c - layout.size / 2).T) + r <= layout.disc_radius + 1e-9)


def test_packing_at_full_render_size_matches_spec_properties() -> None:
    layout = pack_pool_layout(0, 0, 256)
    _assert_valid_packing(layout)
    assert 400 <= len(layout.radii) <= 1200
    assert layout.coverage() >= 0.53


@settings(max_examples=2, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([48, 64, 96]))
def test_vectorised_packing_equals_the_sequential_definition(seed: int, size: int) -> None:
    fast = pack_dots(np.random.default_rng(seed), size)
    slow = pack_dots_reference(np.random.default_rng(seed), size)
    assert np.array_equal(fast.centres, slow.centres) and np.array_equal(fast.radii, slow.radii)


@settings(max_examples=5, deadline=None)
@given(angle=st.floats(0, 2 * np.pi), mirror=st.booleans())
def test_rotated_and_mirrored_layouts_stay_valid(angle: float, mirror: bool) -> None:
    base = pack_pool_layout(3, 1, 128)
    moved = base.rotated(angle, mirror)
    _assert_valid_packing(moved)
    centre = base.size / 2
    assert np.allclose(np.hypot(*(moved.centres - centre).T), np.hypot(*(base.centres - centre).T))
    assert np.array_equal(moved.radii, base.radii)

    def signed_area(c: np.ndarray) -> float:  # orientation of the first three dots
        (ax, ay), (bx, by), (cx, cy) = c[:3]
        return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)

    assert np.sign(signed_area(moved.centres)) == np.sign(signed_area(base.centres)) * (-1 if mirror else 1)


# ---- colour (spec §5, §8.4, §8.5, §8.7) --------------------------------------------------------


def test_spec_confusion_direction_changes_only_the_missing_cone() -> None:
    for axis in AXES:
        lms = RGB_TO_LMS @ confusion_direction(axis)
        others = [i for i in range(3) if i != AXIS_CONE[axis]]
        assert np.all(np.abs(lms[others]) <= 1e-9 * np.abs(lms).max()), axis


def test_srgb_encoding_round_trips() -> None:
    values = np.linspace(0, 1, 1001)
    assert np.allclose(srgb_decode(srgb_encode(values)), values, atol=1e-12)
    assert srgb_decode(np.array([255], dtype=np.uint8))[0] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    axis=st.sampled_from(AXES),
    difficulty=st.sampled_from(sorted(DIFFICULTIES)),
)
def test_colour_pairs_are_isoluminant_confusion_pairs_in_range(seed: int, axis: str, difficulty: str) -> None:
    preset = DIFFICULTIES[difficulty]
    pair = sample_pair(
        np.random.default_rng(seed),
        axis,
        preset.delta_e,
        preset.dichromat_max_delta_e,
        preset.hue_jitter,
        preset.lightness[1],
    )
    f, g = pair.figure, pair.ground
    # Same relative luminance for a normal observer (the issue: hue only).
    assert abs(relative_luminance(f) - relative_luminance(g)) < 1e-12
    # The dichromat's two remaining cone signals are proportional: one chromaticity for them.
    lf, lg = RGB_TO_LMS @ f, RGB_TO_LMS @ g
    i, j = (k for k in range(3) if k != AXIS_CONE[axis])
    assert abs(lf[i] * lg[j] - lf[j] * lg[i]) <= 1e-9 * abs(lf[i] * lg[j])
    # ...but not the missing one: the pair really differs along the axis.
    assert abs(lf[AXIS_CONE[axis]] / lg[AXIS_CONE[axis]] - lf[i] / lg[i]) > 1e-3
    lo, hi = preset.delta_e
    assert lo - 1e-3 <= float(delta_e76(f, g)) <= hi + 1e-3
    assert np.all((f >= PAIR_BOX[0] - 1e-12) & (f <= PAIR_BOX[1] + 1e-12))
    assert np.all((g >= PAIR_BOX[0] - 1e-12) & (g <= PAIR_BOX[1] + 1e-12))
    assert float(dichromat_delta_e(f, g, axis)) < 3.0
    # No dot can clip: the jitter extremes stay inside [0, 1] (so invariances hold per dot).
    reach = preset.hue_jitter * pair.t_span * np.abs(pair.direction)
    for c in (f, g):
        assert np.all(c - reach >= 0) and np.all((c + reach) * preset.lightness[1] <= 1)


def test_colour_pair_draws_depend_on_the_seed_only() -> None:
    a = sample_pair(np.random.default_rng(7), "protan", (12, 25), 2.5)
    b = sample_pair(np.random.default_rng(7), "protan", (12, 25), 2.5)
    c = sample_pair(np.random.default_rng(8), "protan", (12, 25), 2.5)
    assert np.array_equal(a.figure, b.figure) and np.array_equal(a.ground, b.ground)
    assert not np.array_equal(a.figure, c.figure)


# ---- plates (spec §8.5–§8.7 and the luminance bound) ---------------------------------


def _plates(style: PlateStyle, pool: list[DotLayout], indices: range) -> list[PlateDebug]:
    plates = []
    for idx in indices:
        plate = render_plate(style, 0, idx % len(style.classes), idx, pool, return_debug=True)
        assert isinstance(plate, PlateDebug)
        plates.append(plate)
    return plates


@pytest.mark.parametrize("difficulty,count", [("standard", 200), ("hard", 40)])
def test_every_plate_hides_its_figure_from_lightness_and_from_the_dichromat(
    difficulty: str, count: int, fixture_pool: list[DotLayout]
) -> None:
    style = PlateStyle(CLASS_PRESETS["mixed10"], difficulty=difficulty, render_scale=FIXTURE.render_scale)
    preset = DIFFICULTIES[difficulty]
    seen_axes = set()
    for plate in _plates(style, fixture_pool, range(count)):
        seen_axes.add(plate.pair.axis)
        assert 0.04 <= plate.figure.mean() <= 0.45
        # The issue: mean relative luminance of figure and ground dots within 0.03 (0–1 scale).
        fig_y, ground_y = plate.mean_luminance()
        assert abs(fig_y - ground_y) <= 0.03, (fig_y, ground_y)
        # Spec §8.7 on the dots as drawn: the dichromat sees no figure, a normal observer does.
        # (Simulated colours are clipped to the display gamut, see colour.dichromat_delta_e.)
        linear = srgb_decode(plate.dot_colours)
        fig, ground = linear[plate.figure].mean(0), linear[~plate.figure].mean(0)
        assert float(dichromat_delta_e(fig, ground, plate.pair.axis)) < 3.0
        assert float(delta_e76(fig, ground)) >= 0.7 * preset.delta_e[0]
        assert preset.delta_e[0] - 1e-3 <= plate.pair.delta_e <= preset.delta_e[1] + 1e-3
    assert seen_axes == set(AXES)


def test_a_fixed_axis_is_used_for_every_plate(fixture_pool: list[DotLayout]) -> None:
    style = PlateStyle(CLASS_PRESETS["digits"], axis="tritan", render_scale=4)
    assert {p.pair.axis for p in _plates(style, fixture_pool, range(12))} == {"tritan"}


def test_plate_pixels_follow_the_glyph_mask(fixture_pool: list[DotLayout]) -> None:
    plate = _plates(PlateStyle(CLASS_PRESETS["mixed10"], render_scale=4), fixture_pool, range(3, 4))[0]
    big = plate.big.reshape(-1, 3)
    # Every dot centre pixel carries that dot's drawn colour; the figure flag is the mask there.
    rows = np.rint(plate.layout.centres[:, 1]).astype(int)
    cols = np.rint(plate.layout.centres[:, 0]).astype(int)
    assert np.array_equal(plate.figure, plate.mask[rows, cols])
    centre_pixels = big[np.floor(plate.layout.centres[:, 1]).astype(int) * plate.big.shape[1]
                        + np.floor(plate.layout.centres[:, 0]).astype(int)]  # fmt: skip
    assert np.mean(np.all(centre_pixels == plate.dot_colours, axis=1)) > 0.99
    # The small image is the box-filtered big one.
    s = plate.big.shape[0] // plate.image.shape[0]
    box = plate.big.reshape(32, s, 32, s, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(box - plate.image).max() <= 1.0


def test_other_image_sizes_render() -> None:
    style = PlateStyle(CLASS_PRESETS["letters"], image_size=12, render_scale=4)
    image = render_plate(style, 0, 3, 0)  # no pool: packed afresh at 48 px
    assert isinstance(image, np.ndarray) and image.shape == (12, 12, 3) and image.dtype == np.uint8


# ---- classes and glyphs --------------------------------------------------------------------------


def test_class_presets_and_user_lists() -> None:
    assert parse_classes("mixed10") == ("2", "5", "8", "A", "H", "K", "cat", "fish", "bird", "rabbit")
    assert parse_classes("digits") == tuple("0123456789")
    assert len(parse_classes("letters")) == 10 and all(c.isalpha() for c in parse_classes("letters"))
    assert parse_classes("0,1,7,a") == ("0", "1", "7", "A")
    assert parse_classes(" cat , FISH ") == ("cat", "fish")
    for bad in ("mixed5", "0,1,1", "0", "0,ZZ", ""):
        with pytest.raises(SepconvError):
            parse_classes(bad)


def test_glyphs_of_each_preset_are_distinct_shapes() -> None:
    placement = GlyphPlacement((64.0, 64.0), 100.0, 0.0, 15.0)
    masks = {name: glyph_mask(glyph, 128, placement) for name, glyph in GLYPHS.items()}
    assert set(GLYPHS) >= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for name, mask in masks.items():
        assert 0.03 < mask.mean() < 0.6, name  # visible, and not a blob filling the box
    for preset, names in CLASS_PRESETS.items():
        for a, b in itertools.combinations(names, 2):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.75, (preset, a, b, iou)


# ---- the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--n", "7001"], "multiple of 100"),
        (["--classes", "mixed5"], "mixed10"),
        (["--size", "4"], "--size"),
        (["--axis", "red"], "axis"),
    ],
)
def test_cli_bad_arguments_are_one_line_errors(run_cli, tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run_cli("data", "colorchart", "--out", tmp_path / "out", *args, timeout=120)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out" / "batches.meta").exists()


def test_cli_unwritable_out_folder_is_a_one_line_error(run_cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_cli("data", "colorchart", "--out", blocker / "sub", "--n", "100", timeout=120)
    assert_one_line_error(proc, "cannot write")


@pytest.mark.parametrize(
    "spec,needle",
    [
        (ChartSpec(n=100, classes="0,1,7"), "multiple of 30"),
        (ChartSpec(difficulty="easy"), "difficulty"),
        (ChartSpec(render_scale=0), "render-scale"),
        (ChartSpec(layout_pool_size=-1), "pool"),
        (ChartSpec(seed=-1), "seed"),
    ],
)
def test_other_bad_arguments_raise_sepconv_errors(spec: ChartSpec, needle: str) -> None:
    with pytest.raises(SepconvError, match=needle):
        spec.validate()


def test_cli_generates_lists_and_describes(run_cli, tmp_path: Path, capsys) -> None:
    from sepconv.cli import main

    out = tmp_path / "chart"
    proc = run_cli(
        "data", "colorchart", "--out", out, "--n", "120", "--classes", "0,1,7,A", "--size", "16",
        "--render-scale", "2", "--pool", "4", "--workers", "1", "--axis", "deutan", timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "wrote 120 plates" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert set(read_pickle(out / "data_batch_3")["axes"]) == {"deutan"}
    assert main(["data", "list"]) == 0
    assert any(line.startswith("colorchart ") for line in capsys.readouterr().out.splitlines())
    assert main(["data", "info", f"cifar10:{out}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["train"], info["test"], info["image_shape"]) == (84, 36, [3, 16, 16])
    assert info["classes"] == ["0", "1", "7", "A"]
    assert main(["data", "info", "nosuchset"]) == 2
    assert "unknown data set" in capsys.readouterr().err


# ---- the registered data set and its cache -----------------------------------------------------

SMALL = "colorchart:n=100,size=16,render_scale=2,pool=2,letters"


def test_registered_colorchart_is_generated_once_then_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path))
    train = get_dataset(SMALL, train=True)
    assert len(train) == 70 and train.image_size == (16, 16) and not train.flip
    assert train.class_names == list(CLASS_PRESETS["letters"])
    folders = [p for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].name.startswith("colorchart-")

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated a cached data set")

    monkeypatch.setattr(cache_module, "generate_colorchart", must_not_run)
    test = get_dataset(SMALL, train=False)
    assert len(test) == 30 and np.bincount(test.labels.numpy()).tolist() == [3] * 10


def test_interrupted_generation_leaves_no_data_set_behind(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEPCONV_CACHE", str(tmp_path))

    def interrupted(spec, plates, workers=1, progress=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "render_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        get_dataset(SMALL, train=True)
    assert os.listdir(tmp_path) == []  # neither a final folder nor a temporary one


def test_colorchart_options_parse_and_reject() -> None:
    spec = cache_module.parse_options("digits,standard,tritan,seed=3,size=64,classes=0/1/7/A,n=400")
    assert (spec.classes, spec.difficulty, spec.axis, spec.seed, spec.image_size) == (
        "0,1,7,A",
        "standard",
        "tritan",
        3,
        64,
    )
    assert cache_module.parse_options(None) == ChartSpec()
    assert cache_module.parse_options("seed=1").key() != ChartSpec().key()
    for bad in ("bogus", "seed=x", "colour=red", "size=2", "n=150"):
        with pytest.raises(SepconvError):
            cache_module.parse_options(bad)
