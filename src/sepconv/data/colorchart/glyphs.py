"""Class shapes drawn without fonts: stroke polylines and filled polygons in the unit box.

Unit-box coordinates: x to the right, y down, the glyph inside [0, 1]². The six glyphs ``2 5 8 A H
K`` and the four animals follow the table of spec 01 (colour-chart data set) §3; the
other digits and letters are this module's own design, drawn so that no two of a preset look
alike under ±25° rotation (the plate never mirrors a glyph). ``0`` is slashed so that it stays
apart from ``O`` when a user lists both.

:func:`glyph_mask` rasterises a glyph at the plate's render size with the spec's transform: side
``s``, centre, rotation, and strokes ``ω·s`` wide with round caps and joins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
Polyline = tuple[Point, ...]


@dataclass(frozen=True)
class Glyph:
    """``kind`` is ``"stroke"`` (polylines drawn with a pen) or ``"filled"`` (polygons)."""

    name: str
    kind: str
    parts: tuple[Polyline, ...]


def arc(
    cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float, steps: int = 16
) -> Polyline:
    """Points of an elliptical arc; angles in degrees with y down (0 = right, 90 = bottom)."""
    a = np.radians(np.linspace(start_deg, end_deg, steps + 1))
    return tuple((float(cx + rx * np.cos(t)), float(cy + ry * np.sin(t))) for t in a)


def ellipse(cx: float, cy: float, rx: float, ry: float) -> Polyline:
    """A closed 64-gon (first point repeated at the end), as the spec draws ellipses."""
    ring = arc(cx, cy, rx, ry, 0.0, 360.0, steps=64)
    return (*ring[:-1], ring[0])


def _stroke(name: str, *parts: Polyline | list[Point]) -> Glyph:
    return Glyph(name, "stroke", tuple(tuple(p) for p in parts))


def _filled(name: str, *parts: Polyline | list[Point]) -> Glyph:
    return Glyph(name, "filled", tuple(tuple(p) for p in parts))


def _bowl(x0: float, top: float, bottom: float, right: float) -> Polyline:
    """A D-shaped bowl attached to a vertical stem at ``x0`` (for B, P, R, D)."""
    ry = (bottom - top) / 2
    rx = right - x0 - ry * 0.2
    cx = right - rx
    return ((x0, top), *arc(cx, top + ry, rx, ry, -90.0, 90.0), (x0, bottom))


_SPEC_GLYPHS = [
    _stroke("2", [(0.18, 0.28), (0.26, 0.12), (0.42, 0.04), (0.60, 0.04), (0.76, 0.13), (0.82, 0.30),
                  (0.74, 0.48), (0.18, 0.94), (0.86, 0.94)]),
    _stroke("5", [(0.80, 0.06), (0.28, 0.06), (0.22, 0.46), (0.40, 0.38), (0.60, 0.38), (0.77, 0.50),
                  (0.82, 0.68), (0.74, 0.86), (0.55, 0.95), (0.35, 0.95), (0.18, 0.85)]),
    _stroke("8", ellipse(0.5, 0.27, 0.22, 0.21), ellipse(0.5, 0.71, 0.28, 0.24)),
    _stroke("A", [(0.10, 0.95), (0.50, 0.05), (0.90, 0.95)], [(0.27, 0.62), (0.73, 0.62)]),
    _stroke("H", [(0.20, 0.05), (0.20, 0.95)], [(0.80, 0.05), (0.80, 0.95)], [(0.20, 0.50), (0.80, 0.50)]),
    _stroke("K", [(0.22, 0.05), (0.22, 0.95)], [(0.82, 0.05), (0.22, 0.60)], [(0.40, 0.45), (0.84, 0.95)]),
    _filled("cat", ellipse(0.5, 0.62, 0.30, 0.30), [(0.24, 0.45), (0.22, 0.08), (0.46, 0.34)],
            [(0.76, 0.45), (0.78, 0.08), (0.54, 0.34)]),
    _filled("fish", ellipse(0.42, 0.50, 0.32, 0.20), [(0.66, 0.50), (0.96, 0.24), (0.96, 0.76)]),
    _filled("bird", ellipse(0.45, 0.60, 0.30, 0.17), ellipse(0.74, 0.38, 0.13, 0.13),
            [(0.85, 0.33), (0.99, 0.40), (0.85, 0.45)], [(0.18, 0.55), (0.02, 0.42), (0.06, 0.68)]),
    _filled("rabbit", ellipse(0.5, 0.76, 0.27, 0.20), ellipse(0.5, 0.46, 0.16, 0.16),
            ellipse(0.42, 0.17, 0.06, 0.17), ellipse(0.58, 0.17, 0.06, 0.17)),
]  # fmt: skip

_OWN_DIGITS = [
    _stroke("0", ellipse(0.5, 0.5, 0.30, 0.45), [(0.70, 0.17), (0.30, 0.83)]),
    _stroke("1", [(0.28, 0.24), (0.55, 0.05), (0.55, 0.95)], [(0.30, 0.95), (0.80, 0.95)]),
    _stroke("3", [*arc(0.48, 0.28, 0.28, 0.23, -160, 90), *arc(0.50, 0.72, 0.32, 0.23, -90, 160)]),
    _stroke("4", [(0.68, 0.95), (0.68, 0.05), (0.12, 0.68), (0.88, 0.68)]),
    _stroke("6", [(0.74, 0.07), (0.52, 0.06), (0.34, 0.16), (0.22, 0.38), (0.20, 0.68)], ellipse(0.5, 0.69, 0.30, 0.26)),
    _stroke("7", [(0.15, 0.06), (0.85, 0.06), (0.40, 0.95)]),
    _stroke("9", ellipse(0.5, 0.31, 0.30, 0.26), [(0.80, 0.32), (0.78, 0.62), (0.66, 0.84), (0.48, 0.94), (0.26, 0.93)]),
]  # fmt: skip

_OWN_LETTERS = [
    _stroke("B", [(0.22, 0.05), (0.22, 0.95)], _bowl(0.22, 0.05, 0.49, 0.74), _bowl(0.22, 0.49, 0.95, 0.82)),
    _stroke("C", arc(0.55, 0.5, 0.38, 0.45, -45, -315, 24)),
    _stroke("D", [(0.22, 0.05), (0.22, 0.95)], _bowl(0.22, 0.05, 0.95, 0.84)),
    _stroke("E", [(0.80, 0.05), (0.22, 0.05), (0.22, 0.95), (0.80, 0.95)], [(0.22, 0.50), (0.70, 0.50)]),
    _stroke("F", [(0.80, 0.05), (0.22, 0.05), (0.22, 0.95)], [(0.22, 0.48), (0.68, 0.48)]),
    _stroke("G", [*arc(0.52, 0.5, 0.38, 0.45, -40, -360, 24), (0.58, 0.5)]),
    _stroke("I", [(0.50, 0.05), (0.50, 0.95)], [(0.28, 0.05), (0.72, 0.05)], [(0.28, 0.95), (0.72, 0.95)]),
    _stroke("J", [(0.35, 0.05), (0.82, 0.05)], [(0.66, 0.05), *arc(0.45, 0.70, 0.21, 0.25, 0, 170)]),
    _stroke("L", [(0.25, 0.05), (0.25, 0.95), (0.80, 0.95)]),
    _stroke("M", [(0.12, 0.95), (0.18, 0.05), (0.50, 0.65), (0.82, 0.05), (0.88, 0.95)]),
    _stroke("N", [(0.20, 0.95), (0.20, 0.05), (0.80, 0.95), (0.80, 0.05)]),
    _stroke("O", ellipse(0.5, 0.5, 0.36, 0.45)),
    _stroke("P", [(0.22, 0.95), (0.22, 0.05)], _bowl(0.22, 0.05, 0.52, 0.80)),
    _stroke("Q", ellipse(0.5, 0.5, 0.36, 0.45), [(0.58, 0.70), (0.90, 0.98)]),
    _stroke("R", [(0.22, 0.95), (0.22, 0.05)], _bowl(0.22, 0.05, 0.52, 0.80), [(0.46, 0.52), (0.84, 0.95)]),
    _stroke("S", [*arc(0.50, 0.28, 0.30, 0.23, -20, -270), *arc(0.50, 0.72, 0.32, 0.23, -90, 160)]),
    _stroke("T", [(0.10, 0.05), (0.90, 0.05)], [(0.50, 0.05), (0.50, 0.95)]),
    _stroke("U", [(0.20, 0.05), *arc(0.5, 0.60, 0.30, 0.35, 180, 0), (0.80, 0.05)]),
    _stroke("V", [(0.10, 0.05), (0.50, 0.95), (0.90, 0.05)]),
    _stroke("W", [(0.05, 0.05), (0.27, 0.95), (0.50, 0.35), (0.73, 0.95), (0.95, 0.05)]),
    _stroke("X", [(0.15, 0.05), (0.85, 0.95)], [(0.85, 0.05), (0.15, 0.95)]),
    _stroke("Y", [(0.12, 0.05), (0.50, 0.50), (0.88, 0.05)], [(0.50, 0.50), (0.50, 0.95)]),
    _stroke("Z", [(0.15, 0.05), (0.85, 0.05), (0.15, 0.95), (0.85, 0.95)]),
]  # fmt: skip

GLYPHS: dict[str, Glyph] = {g.name: g for g in (*_SPEC_GLYPHS, *_OWN_DIGITS, *_OWN_LETTERS)}

CLASS_PRESETS: dict[str, tuple[str, ...]] = {
    "mixed10": ("2", "5", "8", "A", "H", "K", "cat", "fish", "bird", "rabbit"),  # the spec's classes
    "digits": tuple("0123456789"),
    "letters": tuple("ACEHKLPTUX"),
}


@dataclass(frozen=True)
class GlyphPlacement:
    """Where a glyph goes on the canvas: box ``centre`` (x, y), ``side`` and ``angle`` (radians),
    the pen width ``stroke`` (pixels, stroke glyphs only), and a deformation before the rotation:
    ``shear`` k (x += k·y) and ``stretch`` s (width × s, height / s)."""

    centre: tuple[float, float]
    side: float
    angle: float
    stroke: float
    shear: float = 0.0
    stretch: float = 1.0

    def apply(self, points: Polyline) -> np.ndarray:
        """Unit-box points -> canvas pixels: centre + side·Rot(angle)·D(p − (0.5, 0.5)), D the
        deformation (identity by default)."""
        p = (np.asarray(points, dtype=np.float64) - 0.5) * self.side
        if self.shear or self.stretch != 1.0:
            p = p @ np.array([[self.stretch, 0.0], [self.shear, 1.0 / self.stretch]])
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return p @ np.array([[cos, sin], [-sin, cos]]) + np.asarray(self.centre)


def glyph_mask(glyph: Glyph, size: int, placement: GlyphPlacement) -> np.ndarray:
    """The glyph rasterised on a ``size``×``size`` canvas, as a bool (size, size) array."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for part in glyph.parts:
        pts = [tuple(p) for p in placement.apply(part).tolist()]
        if glyph.kind == "filled":
            draw.polygon(pts, fill=255)
            continue
        # Round caps and joins: a line of the pen's width plus a disc at every vertex.
        draw.line(pts, fill=255, width=max(1, round(placement.stroke)))
        half = placement.stroke / 2
        for x, y in pts:
            draw.ellipse((x - half, y - half, x + half, y + half), fill=255)
    return np.asarray(canvas) >= 128
