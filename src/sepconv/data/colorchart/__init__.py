"""The Colour Perception Test Chart: sepconv's built-in, generated data set of pseudo-isochromatic
plates ([Wen24] §4; implementable spec spec 01 (colour-chart data set)).

A plate is a disc of non-overlapping dots; dots inside a glyph take the figure colour, the rest the
ground colour, both on one dichromat confusion line and equally luminous, with per-dot lightness
and hue jitter from the same distribution, so that only hue shows the glyph.

Modules, one concept each: :mod:`.colour` (cone space, CIELAB, confusion lines, colour pairs),
:mod:`.glyphs` (class shapes), :mod:`.packing` (dot layouts), :mod:`.plate` (one plate),
:mod:`.generate` (the data set files), :mod:`.cache` (the registered ``colorchart`` data set).
"""

from .cache import cached_colorchart, load_colorchart, parse_options
from .generate import ChartSpec, GenerationReport, generate_colorchart, parse_classes
from .glyphs import CLASS_PRESETS, GLYPHS
from .plate import DIFFICULTIES, PlateDebug, PlateStyle, render_plate

__all__ = [
    "CLASS_PRESETS",
    "DIFFICULTIES",
    "GLYPHS",
    "ChartSpec",
    "GenerationReport",
    "PlateDebug",
    "PlateStyle",
    "cached_colorchart",
    "generate_colorchart",
    "load_colorchart",
    "parse_classes",
    "parse_options",
    "render_plate",
]
