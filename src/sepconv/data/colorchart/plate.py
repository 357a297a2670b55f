
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
``SeedSequence([seed, class_id, sample_idx]).spawn(7)`` for (axis, pair, shape, layout, jitter,
extra, contrast); the sixth stream (glyph deformation and clutter) and the seventh (the per-plate
contrast of ``faint``) are new and leave the other five — and so every ``standard`` and ``hard``
plate — exactly as before (``spawn`` numbers its children, so the first six do not change).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace

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
    """How hard plates are: the knobs of spec §5 plus the geometry and clutter that make the task
    perceptual rather than linearly separable (see :func:`difficulty_at`).

    A linear read-out of a per-pixel chroma map classifies the ``standard`` plates at 99 %: the
    glyph sits within a pixel of the centre at one of a few sizes, so each class is a fixed
    template. Moving, shearing and stretching the glyph, and adding blobs of a figure-like colour
    to the ground, break the template while a convolutional network, which is equivariant to
    translation and can learn shape, still reads the glyph."""

    name: str
    delta_e: tuple[float, float]  # CIE76 distance figure-ground (the hue step along the confusion line)
    side: tuple[float, float]  # glyph box side / plate diameter
    max_rotation_deg: float
    hue_jitter: float  # h: per-dot shift along the line, in units of |t_f - t_g|
    lightness: tuple[float, float]  # per-dot factor on linear RGB
    dichromat_max_delta_e: float = 2.5  # pairs the simulated dichromat could tell apart are redrawn
    centre_jitter: float = 0.06  # max box-centre offset / plate radius (less for glyphs that would leave the disc)
    shear: float = 0.0  # max |k| of the glyph shear x += k·y (unit box)
    aspect: float = 0.0  # max |a| of the stretch: width × e^a, height × e^-a
    clutter: float = 0.0  # mean number of clutter blobs per plate
    clutter_contrast: float = 0.0  # a clutter dot's colour: ground + contrast·(figure − ground)
    clutter_radius: tuple[float, float] = (0.10, 0.18)  # blob radius / plate radius
    level: float | None = None  # its place on the continuous scale of difficulty_at, if it has one
    # Per-plate contrast: each plate's hue step is the preset's times a factor uniform on [1 - faint, 1]
    # (drawn from its own stream). A colour-vision test mixes plates of every contrast down to the
    # threshold: at faint = 0.9 the faintest plates of `paper` (ΔE 23.5 x 0.1) sit at the
    # just-noticeable difference (CIE76 ΔE ≈ 2.3), so accuracy falls below 100 % smoothly, through
    # hard plates, while the bright ones keep the colour signal strong enough to learn from (strong
    # clutter and a halved step everywhere kept ResNet-20 at chance instead: stall_study.md).
    faint: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The two ends of the continuous scale (difficulty_at): level 0 is `standard`; level 1 moves the glyph
# anywhere its size allows, shrinks, shears, stretches and turns it, and puts faint blobs of a
# figure-like colour in the ground. The hue step and the jitters move only a little: a first scale
# that also halved the colour signal and put strong clutter in the ground (hue step 18-35, clutter
# 5 blobs at 0.8 of the figure's contrast) kept ResNet-20 on its chance-level plateau for 6+ epochs
# from level 0.6 on (benchmarks/results/stall_study.md): a benchmark that only measures how long
# optimisation takes to find the colour signal ranks nothing.
LEVEL_0 = Difficulty("level0", (25.0, 45.0), (0.55, 0.70), 15.0, 0.15, (0.85, 1.05))
LEVEL_1 = Difficulty(
    "level1",
    delta_e=(22.0, 42.0),
    side=(0.38, 0.60),
    max_rotation_deg=30.0,
    hue_jitter=0.18,
    lightness=(0.84, 1.05),
    centre_jitter=0.45,
    shear=0.35,
    aspect=0.30,
    clutter=4.0,
    clutter_contrast=0.45,
    clutter_radius=(0.05, 0.10),
)
# `paper`: chosen with benchmarks/colorchart_calibration.py. Level 0.5 alone: chroma probe 51.5 %
# (target < 60 %), but ResNet-20 either stalls at chance or, once it finds the colour cue, reaches
# 99.6-99.8 % (colorchart_calibration_recipe_e10_w1*.md): a cliff, no level in the 93-97 % band.
# With the per-plate contrast spread `faint` and the recipes' curriculum (one epoch of `standard`
# plates: TrainConfig.curriculum), ResNet-20 at the recipes' settings falls smoothly through the
# band: 98.10 (seed 0) / 96.59 / 94.11 % (3 seeds) at faint 0.8 / 0.9 / 0.95, chroma probe 42.7 / 39.7 / 38.3 %
# (..._curriculumcolorchart_curriculum_epochs1_level0.5_faint.md).
PAPER_LEVEL = 0.5
PAPER_FAINT = 0.95


def _lerp(a: object, b: object, t: float) -> object:
    if isinstance(a, tuple):
        return tuple(_lerp(x, y, t) for x, y in zip(a, b))  # type: ignore[arg-type]
    return float(a) + (float(b) - float(a)) * t  # type: ignore[arg-type]


def difficulty_at(level: float, name: str | None = None) -> Difficulty:
    """The difficulty at ``level`` in [0, 1] of the continuous scale: every knob moves linearly from
    ``standard`` (0) to :data:`LEVEL_1` (1). Documented knobs, in the order they matter: glyph
    position (``centre_jitter``), size (``side``), shear/stretch/rotation (deformation), clutter
    blobs in the ground, the hue step ``delta_e`` and the per-dot hue/lightness jitter."""
    level = float(level)
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"difficulty level {level} outside [0, 1]")
    values = {
        f.name: _lerp(getattr(LEVEL_0, f.name), getattr(LEVEL_1, f.name), level)
        for f in fields(Difficulty)
        if f.name not in ("name", "level", "faint")
    }
    return Difficulty(name=name or f"{level:g}", level=level, **values)  # type: ignore[arg-type]


DIFFICULTIES = {
    "standard": Difficulty("standard", (25.0, 45.0), (0.55, 0.70), 15.0, 0.15, (0.85, 1.05), level=0.0),
    "hard": Difficulty("hard", (12.0, 25.0), (0.45, 0.70), 25.0, 0.30, (0.75, 1.10)),
    "paper": replace(difficulty_at(PAPER_LEVEL, "paper"), faint=PAPER_FAINT),
}


def canonical_difficulty(text: str | float) -> str:
    """A preset name, or a level in [0, 1] written canonically (``"0.50"`` -> ``"0.5"``); raises
    ValueError for anything else."""
    word = str(text).strip()
    if word in DIFFICULTIES:
        return word
    try:
        level = float(word)
    except ValueError:
        raise ValueError(word) from None
    if not 0.0 <= level <= 1.0:
        raise ValueError(word)
    return f"{level:g}"


@functools.lru_cache(maxsize=64)
def get_difficulty(text: str | float) -> Difficulty:
    """A preset by name (``standard``, ``hard``, ``paper``) or the level ``text`` of :func:`difficulty_at`."""
    word = canonical_difficulty(text)
    return DIFFICULTIES[word] if word in DIFFICULTIES else difficulty_at(float(word))


def check_faint(value: float) -> float:
    """``value`` as a valid ``faint`` (0 <= faint < 1); raises ValueError otherwise."""
    faint = float(value)
    if not 0.0 <= faint < 1.0:  # also rejects nan
        raise ValueError(f"faint {value} outside [0, 1)")
    return faint


@functools.lru_cache(maxsize=64)
def with_faint(preset: Difficulty, faint: float | None) -> Difficulty:
    """``preset`` with its per-plate contrast spread set to ``faint`` (unchanged for None)."""
    if faint is None or check_faint(faint) == preset.faint:
        return preset
    return replace(preset, faint=check_faint(faint))


@dataclass(frozen=True)
class PlateStyle:
    """Everything about plates that is not per-plate randomness."""

    classes: tuple[str, ...]
    difficulty: str = "hard"
    axis: str = "random"  # one of AXES, or "random" (uniform per plate)
    image_size: int = 32
    render_scale: int = 8
    gaps: str = "paper"  # what shows between the dots inside the plate: "paper" or "mean" (see render_plate)
    faint: float | None = None  # overrides the preset's `faint` (per-plate contrast spread) when set

    @property
    def render_size(self) -> int:
        return self.image_size * self.render_scale

    @property
    def preset(self) -> Difficulty:
        return with_faint(get_difficulty(self.difficulty), self.faint)


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
    clutter: np.ndarray  # bool (N,), a ground dot recoloured as clutter

    def mean_luminance(self) -> tuple[float, float]:
        """Mean relative luminance (0–1) of the figure dots and of the ground dots, as drawn."""
        y = relative_luminance(srgb_decode(self.dot_colours))
        return float(y[self.figure].mean()), float(y[~self.figure].mean())


def plate_streams(seed: int, class_id: int, sample_idx: int) -> list[np.random.Generator]:
    """The seven independent streams of one plate: axis, pair, shape, layout, jitter, extra, contrast."""
    children = np.random.SeedSequence([seed, class_id, sample_idx]).spawn(7)
    return [np.random.default_rng(c) for c in children]


def _stratified_uniform(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` values, each uniform on [low, high), one in each of n equal strata in random order:
    the same marginal distribution as iid draws, but a sample mean within (high−low)/n of the
    middle."""
    if n == 0:
        return np.zeros(0)
    strata = rng.permutation(n)
    return low + (high - low) * (strata + rng.random(n)) / n


def _placement(rng: np.random.Generator, extra: np.random.Generator, style: PlateStyle) -> GlyphPlacement:
    preset = style.preset
    size = style.render_size
    radius = 0.47 * size
    sigma = rng.uniform(*preset.side)
    side = sigma * 2 * radius
    # A glyph may move as far as the preset allows but no further than keeps it on the disc (small
    # glyphs move more); the spec's 0.06 always remains, so standard/hard plates are unchanged.
    jitter = min(preset.centre_jitter, max(CENTRE_JITTER, 0.95 - 1.25 * sigma))
    dx, dy = rng.uniform(-jitter, jitter, size=2) * radius
    angle = np.radians(rng.uniform(-preset.max_rotation_deg, preset.max_rotation_deg))
    stroke = rng.uniform(*STROKE_RANGE) * side
    shear = float(extra.uniform(-preset.shear, preset.shear)) if preset.shear else 0.0
    aspect = float(extra.uniform(-preset.aspect, preset.aspect)) if preset.aspect else 0.0
    return GlyphPlacement(
        (size / 2 + dx, size / 2 + dy), float(side), float(angle), float(stroke), shear, float(np.exp(aspect))
    )


def _clutter(rng: np.random.Generator, preset: Difficulty, layout: DotLayout, figure: np.ndarray) -> np.ndarray:
    """Ground dots inside a few random blobs (the preset's mean count, radius range), which take
    a figure-like colour: without shape, a chroma map shows blobs beside the glyph."""
    clutter = np.zeros(len(figure), dtype=bool)
    if preset.clutter <= 0 or preset.clutter_contrast <= 0:
        return clutter
    whole, frac = divmod(preset.clutter, 1.0)
    count = int(whole) + int(rng.random() < frac)
    radius = layout.disc_radius
    centre = layout.size / 2
    for _ in range(count):
        rho = 0.85 * radius * np.sqrt(rng.random())
        phi = 2 * np.pi * rng.random()
        r = rng.uniform(*preset.clutter_radius) * radius
        bx, by = centre + rho * np.cos(phi), centre + rho * np.sin(phi)
        d2 = (layout.centres[:, 0] - bx) ** 2 + (layout.centres[:, 1] - by) ** 2
        clutter |= d2 < r * r
    return clutter & ~figure


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
    streams = plate_streams(seed, class_id, sample_idx)
    axis_rng, pair_rng, shape_rng, layout_rng, jitter_rng, extra_rng, contrast_rng = streams
    preset = style.preset
    axis = AXES[int(axis_rng.integers(len(AXES)))] if style.axis == "random" else style.axis
    delta_e = preset.delta_e
    if preset.faint > 0:  # this plate's contrast (the pair's own draw stays as it was)
        factor = float(contrast_rng.uniform(1.0 - preset.faint, 1.0))
        delta_e = (delta_e[0] * factor, delta_e[1] * factor)
    pair = sample_pair(
        pair_rng, axis, delta_e, preset.dichromat_max_delta_e, preset.hue_jitter, preset.lightness[1]
    )
    placement = _placement(shape_rng, extra_rng, style)
    size = style.render_size
    mask = glyph_mask(GLYPHS[style.classes[class_id]], size, placement)
    layout = _layout(layout_rng, style, pool)

    rows = np.clip(np.rint(layout.centres[:, 1]).astype(np.int64), 0, size - 1)
    cols = np.clip(np.rint(layout.centres[:, 0]).astype(np.int64), 0, size - 1)
    figure = mask[rows, cols]
    clutter = _clutter(extra_rng, preset, layout, figure)

    # Hue jitter along the (isoluminant) line, then a lightness factor; per group, stratified.
    n = len(figure)
    shift = np.empty(n)
    lightness = np.empty(n)
    for group in (figure, ~figure):
        k = int(group.sum())
        shift[group] = _stratified_uniform(jitter_rng, k, -preset.hue_jitter, preset.hue_jitter) * pair.t_span
        lightness[group] = _stratified_uniform(jitter_rng, k, *preset.lightness)
    base = np.where(figure[:, None], pair.figure, pair.ground)
    if clutter.any():  # on the segment ground-figure: isoluminant and a dichromat's confusion pair too
        base[clutter] = pair.ground + preset.clutter_contrast * (pair.figure - pair.ground)
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
    return PlateDebug(image, np.asarray(canvas).copy(), mask, layout, figure, colours, pair, placement, clutter)
