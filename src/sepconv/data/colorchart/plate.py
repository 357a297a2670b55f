
"""One pseudo-isochromatic plate: glyph mask + dot layout + colour pair -> a small uint8 image.

Spec spec 01 (colour-chart data set) §3–§6, with the differences the issue asks for:

* the colour pair is isoluminant for a normal observer (see :mod:`.colour`);
* the per-dot jitters are drawn by *stratified* sampling within the figure and within the ground
  (each dot's value is still uniform on the preset's range, the same distribution for both), so the
  two groups' mean lightness factors agree to ~1e-4 even when the figure has only 30 dots: the
  issue requires figure and ground mean relative luminance within 0.03 on *every* plate, which
  independent draws would break for small figures (σ of the mean ≈ 0.02);
* classes come from any glyph list (:data:`.glyphs.CLASS_PRESETS` or user-given);
* the output size is any ``image_size`` ≥ 8; the render size is ``image_size · render_scale``;
* :func:`render_plate` takes a :class:`PlateStyle` (classes, difficulty, axis, sizes) and the
  layout pool instead of the spec's ``(seed, class_id, sample_idx, difficulty)`` alone.

Random streams (spec §6): plate (``seed``, ``class_id``, ``sample_idx``) uses
``SeedSequence([seed, class_id, sample_idx]).spawn(5)`` for (axis, pair, shape, layout, jitter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .colour import AXES, ColourPair, relative_luminance, sample_pair, srgb_decode, srgb_encode
from .glyphs import GLYPHS, GlyphPlacement, glyph_mask
from .packing import DotLayout, pack_dots

PAPER = (245, 242, 235)  # canvas colour outside the dots
STROKE_RANGE = (0.13, 0.17)  # pen width / glyph side
CENTRE_JITTER = 0.06  # box centre offset / plate radius
AXIS_CHOICES = (*AXES, "random")


@dataclass(frozen=True)
class Difficulty:
    """A preset of spec §5 (plus the dichromat bound of this module's colour pairs)."""

    name: str
    delta_e: tuple[float, float]  # CIE76 distance figure-ground
    side: tuple[float, float]  # glyph box side / plate diameter
    max_rotation_deg: float
    hue_jitter: float  # h: per-dot shift along the line, in units of |t_f - t_g|
    lightness: tuple[float, float]  # per-dot factor on linear RGB
    dichromat_max_delta_e: float = 2.5  # pairs the simulated dichromat could tell apart are redrawn


DIFFICULTIES = {
    "standard": Difficulty("standard", (25.0, 45.0), (0.55, 0.70), 15.0, 0.15, (0.85, 1.05)),
    "hard": Difficulty("hard", (12.0, 25.0), (0.45, 0.70), 25.0, 0.30, (0.75, 1.10)),
}


@dataclass(frozen=True)
class PlateStyle:
    """Everything about plates that is not per-plate randomness."""

    classes: tuple[str, ...]
    difficulty: str = "hard"
    axis: str = "random"  # one of AXES, or "random" (uniform per plate)
    image_size: int = 32
    render_scale: int = 8
    gaps: str = "paper"  # what shows between the dots inside the plate: "paper" or "mean" (see render_plate)

    @property
    def render_size(self) -> int:
        return self.image_size * self.render_scale

    @property
    def preset(self) -> Difficulty:
        return DIFFICULTIES[self.difficulty]


@dataclass(frozen=True)
class PlateDebug:
    """A plate and how it was made (spec §7 ``return_debug``)."""

    image: np.ndarray  # uint8 (image_size, image_size, 3)
    big: np.ndarray  # uint8 (render_size, render_size, 3), before downsampling
    mask: np.ndarray  # bool (render_size, render_size), the glyph
    layout: DotLayout  # the dots as placed on this plate (after rotation/mirroring)
    figure: np.ndarray  # bool (N,), dot centre inside the glyph
    dot_colours: np.ndarray  # uint8 (N, 3), sRGB-encoded as drawn
    pair: ColourPair
    placement: GlyphPlacement

    def mean_luminance(self) -> tuple[float, float]:
        """Mean relative luminance (0–1) of the figure dots and of the ground dots, as drawn."""
        y = relative_luminance(srgb_decode(self.dot_colours))
        return float(y[self.figure].mean()), float(y[~self.figure].mean())


def plate_streams(seed: int, class_id: int, sample_idx: int) -> list[np.random.Generator]:
    """The five independent streams of one plate: axis, pair, shape, layout, jitter."""
    children = np.random.SeedSequence([seed, class_id, sample_idx]).spawn(5)
    return [np.random.default_rng(c) for c in children]


def _stratified_uniform(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` values, each uniform on [low, high), one in each of n equal strata in random order:
    the same marginal distribution as iid draws, but a sample mean within (high−low)/n of the
    middle."""
    if n == 0:
        return np.zeros(0)
    strata = rng.permutation(n)
    return low + (high - low) * (strata + rng.random(n)) / n


def _placement(rng: np.random.Generator, style: PlateStyle) -> GlyphPlacement:
    preset = style.preset
    size = style.render_size
    radius = 0.47 * size
    side = rng.uniform(*preset.side) * 2 * radius
    dx, dy = rng.uniform(-CENTRE_JITTER, CENTRE_JITTER, size=2) * radius
    angle = np.radians(rng.uniform(-preset.max_rotation_deg, preset.max_rotation_deg))
    stroke = rng.uniform(*STROKE_RANGE) * side
    return GlyphPlacement((size / 2 + dx, size / 2 + dy), float(side), float(angle), float(stroke))


def _layout(rng: np.random.Generator, style: PlateStyle, pool: list[DotLayout] | None) -> DotLayout:
    if not pool:
        return pack_dots(rng, style.render_size)
    base = pool[int(rng.integers(len(pool)))]
    angle = rng.uniform(0.0, 2 * np.pi)
    mirror = bool(rng.random() < 0.5)
    return base.rotated(angle, mirror)


def render_plate(
    style: PlateStyle,
    seed: int,
    class_id: int,
    sample_idx: int,
    pool: list[DotLayout] | None = None,
    return_debug: bool = False,
) -> np.ndarray | PlateDebug:
    """The plate of class ``style.classes[class_id]`` number ``sample_idx`` for ``seed``.

    ``pool`` is the layout pool (spec §4); without one every plate is packed afresh (slower).
    Returns uint8 (image_size, image_size, 3), or a :class:`PlateDebug` when ``return_debug``.
    """
    axis_rng, pair_rng, shape_rng, layout_rng, jitter_rng = plate_streams(seed, class_id, sample_idx)
    preset = style.preset
    axis = AXES[int(axis_rng.integers(len(AXES)))] if style.axis == "random" else style.axis
    pair = sample_pair(
        pair_rng, axis, preset.delta_e, preset.dichromat_max_delta_e, preset.hue_jitter, preset.lightness[1]
    )
    placement = _placement(shape_rng, style)
    size = style.render_size
    mask = glyph_mask(GLYPHS[style.classes[class_id]], size, placement)
    layout = _layout(layout_rng, style, pool)

    rows = np.clip(np.rint(layout.centres[:, 1]).astype(np.int64), 0, size - 1)
    cols = np.clip(np.rint(layout.centres[:, 0]).astype(np.int64), 0, size - 1)
    figure = mask[rows, cols]

    # Hue jitter along the (isoluminant) line, then a lightness factor; per group, stratified.
    n = len(figure)
    shift = np.empty(n)
    lightness = np.empty(n)
    for group in (figure, ~figure):
        k = int(group.sum())
        shift[group] = _stratified_uniform(jitter_rng, k, -preset.hue_jitter, preset.hue_jitter) * pair.t_span
        lightness[group] = _stratified_uniform(jitter_rng, k, *preset.lightness)
    base = np.where(figure[:, None], pair.figure, pair.ground)
    # The pair was drawn so that this never leaves [0, 1]; the clip only guards rounding.
    linear = np.clip((base + shift[:, None] * pair.direction) * lightness[:, None], 0.0, 1.0)
    colours = np.rint(srgb_encode(linear) * 255.0).astype(np.uint8)

    canvas = Image.new("RGB", (size, size), PAPER)
    draw = ImageDraw.Draw(canvas)
    if style.gaps == "mean":
        mid = 0.5 * (pair.figure + pair.ground) * (0.5 * sum(preset.lightness))
        fill = tuple(int(v) for v in np.rint(srgb_encode(mid) * 255.0))
        radius = layout.disc_radius
        draw.ellipse((size / 2 - radius, size / 2 - radius, size / 2 + radius, size / 2 + radius), fill=fill)
    for (x, y), r, c in zip(layout.centres.tolist(), layout.radii.tolist(), colours.tolist()):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(c))
    small = canvas.resize((style.image_size, style.image_size), Image.Resampling.BOX)
    image = np.asarray(small, dtype=np.uint8).copy()
    if not return_debug:
        return image
    return PlateDebug(image, np.asarray(canvas).copy(), mask, layout, figure, colours, pair, placement)
