"""Colour science for pseudo-isochromatic plates: cone space, CIELAB, confusion lines, dichromats.

All colours are linear sRGB in [0, 1] (numpy arrays whose last axis is R, G, B) unless a name
says ``encoded``. Constants follow spec 01 (colour-chart data set) §5.

**Difference from the spec (the issue wins).** The spec puts figure and ground on a straight line
``c0 + t·d_a`` with ``d_a = M⁻¹e_a``: exactly one cone signal differs. For protan and deutan that
line is far from isoluminant (relative luminance changes by 0.12 and 0.08 per unit ``t``), so the
figure could be read from lightness alone (mean ΔY up to 0.08 at the ``standard`` contrasts). The
issue requires figure and ground to differ by hue only, with mean relative luminance within 0.03.
Both cannot hold exactly, so the pair lies on the *isoluminant* line through ``c0`` inside the
plane spanned by ``c0`` and ``d_a``: direction ``Y(c0)·d_a − Y(d_a)·c0``. Along it the relative
luminance is constant and the two cone signals the dichromat still has stay *proportional*, so the
dichromat sees one chromaticity (a classical confusion line in the chromaticity diagram) and at
most a small lightness ratio, which the per-dot lightness jitter hides. Pairs where that ratio
would be visible to the simulated dichromat (ΔE ≥ ``dichromat_max_delta_e``, on the display) are rejected, so the
spec's §8.7 test still holds. For tritan, ``Y(d_a)`` is ≈ 0 and the line is the spec's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Viénot, Brettel & Mollon (1999): linear sRGB -> LMS cone excitations.
RGB_TO_LMS = np.array(
    [[17.8824, 43.5161, 4.11935], [3.45565, 27.1554, 3.86714], [0.0299566, 0.184309, 1.46709]]
)
LMS_TO_RGB = np.linalg.inv(RGB_TO_LMS)
# sRGB (D65) -> CIE XYZ; row 1 is relative luminance Y.
RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
LUMINANCE = RGB_TO_XYZ[1]
D65_WHITE = np.array([0.95047, 1.0, 1.08883])

AXES = ("protan", "deutan", "tritan")
# The cone (row of RGB_TO_LMS) each dichromacy lacks.
AXIS_CONE = {"protan": 0, "deutan": 1, "tritan": 2}
# Spec §8.7: a dichromat's missing cone signal as a fixed function of the other two (LMS weights).
DICHROMAT_PROJECTION = {
    "protan": np.array([0.0, 2.02344, -2.52581]),
    "deutan": np.array([0.494207, 0.0, 1.24827]),
    "tritan": np.array([-0.395913, 0.801109, 0.0]),
}

# Pairs live in this box so that lightness jitter and hue jitter rarely clip.
PAIR_BOX = (0.05, 0.95)
REFERENCE_RANGE = (0.15, 0.85)


def relative_luminance(linear: np.ndarray) -> np.ndarray:
    return np.asarray(linear, dtype=np.float64) @ LUMINANCE


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear [0, 1] -> sRGB-encoded [0, 1] (IEC 61966-2-1)."""
    c = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] -> linear [0, 1]; accepts uint8 (divided by 255)."""
    e = np.asarray(encoded)
    e = e / 255.0 if e.dtype == np.uint8 else e.astype(np.float64)
    return np.where(e <= 0.04045, e / 12.92, np.power((e + 0.055) / 1.055, 2.4))


_XYZ_OVER_WHITE = (RGB_TO_XYZ / D65_WHITE[:, None]).T  # linear RGB row vector -> XYZ / white
_LAB_EPSILON, _LAB_KAPPA = 216 / 24389, 24389 / 27


def linear_to_lab(linear: np.ndarray) -> np.ndarray:
    """Linear sRGB -> CIELAB (D65). Values outside [0, 1] are extrapolated, not clipped, so that
    simulated dichromat colours slightly outside the gamut still get a distance."""
    xyz = np.asarray(linear, dtype=np.float64) @ _XYZ_OVER_WHITE
    f = np.where(xyz > _LAB_EPSILON, np.cbrt(xyz), (_LAB_KAPPA * xyz + 16) / 116)
    lab = f @ _F_TO_LAB
    lab[..., 0] -= 16
    return lab


# L* = 116 f_y − 16, a* = 500 (f_x − f_y), b* = 200 (f_y − f_z), as one matrix on (f_x, f_y, f_z).
_F_TO_LAB = np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]])


def delta_e76(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference of linear sRGB colours (broadcasting over leading axes)."""
    return lab_distance(linear_to_lab(a), linear_to_lab(b))


def lab_distance(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    d = lab_a - lab_b
    return np.sqrt(np.einsum("...i,...i->...", d, d))


def confusion_direction(axis: str) -> np.ndarray:
    """The spec's confusion-line direction ``M⁻¹e_a`` (only the missing cone changes), max |·| = 1."""
    d = LMS_TO_RGB[:, AXIS_CONE[axis]]
    return d / np.abs(d).max()


def isoluminant_confusion_direction(axis: str, reference: np.ndarray) -> np.ndarray:
    """Per-row direction through ``reference`` (…, 3) that keeps relative luminance constant and the
    dichromat's two remaining cone signals proportional (see the module docstring), max |·| = 1."""
    d = confusion_direction(axis)
    ref = np.asarray(reference, dtype=np.float64)
    iso = relative_luminance(ref)[..., None] * d - (LUMINANCE @ d) * ref
    return iso / np.abs(iso).max(axis=-1, keepdims=True)


def simulate_dichromat(linear: np.ndarray, axis: str) -> np.ndarray:
    """What the dichromat of ``axis`` sees (spec §8.7): the missing cone signal is replaced by a fixed
    function of the other two. Linear in the colour; no clipping."""
    lms = np.asarray(linear, dtype=np.float64) @ RGB_TO_LMS.T
    lms[..., AXIS_CONE[axis]] = lms @ DICHROMAT_PROJECTION[axis]
    return lms @ LMS_TO_RGB.T


def dichromat_delta_e(a: np.ndarray, b: np.ndarray, axis: str) -> np.ndarray:
    """ΔE between ``a`` and ``b`` as the dichromat of ``axis`` sees them on the display: simulated,
    then clipped to the displayable [0, 1]. (The tritan projection sends many colours to negative
    blue, where CIELAB's b* is ten times more sensitive than inside the gamut; unclipped, rounding
    residues of a few 1e-3 there read as ΔE of several units that no display can show.)"""
    return delta_e76(np.clip(simulate_dichromat(a, axis), 0, 1), np.clip(simulate_dichromat(b, axis), 0, 1))


@dataclass(frozen=True)
class ColourPair:
    """Figure and ground colours of one plate (linear sRGB) on the isoluminant confusion line
    ``direction`` of ``axis``; ``t_span`` = |t_figure − t_ground| along it (scales the hue jitter)."""

    axis: str
    figure: np.ndarray
    ground: np.ndarray
    direction: np.ndarray
    t_span: float
    delta_e: float
    dichromat_delta_e: float


def _line_box_interval(origin: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``origin + t·direction``, the interval of t that stays inside PAIR_BOX³."""
    lo, hi = PAIR_BOX
    with np.errstate(divide="ignore", invalid="ignore"):
        t_a = (lo - origin) / direction
        t_b = (hi - origin) / direction
    moving = direction != 0
    t_min = np.where(moving, np.minimum(t_a, t_b), -np.inf).max(axis=-1)
    t_max = np.where(moving, np.maximum(t_a, t_b), np.inf).min(axis=-1)
    return t_min, t_max


def _solve_distance(
    reference: np.ndarray,
    direction: np.ndarray,
    ground_lab: np.ndarray,
    target: np.ndarray,
    t_near: np.ndarray,
    t_far: np.ndarray,
    iterations: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, t between ``t_near`` (ΔE = 0 there) and ``t_far`` (ΔE ≥ target) with
    ΔE(c(t), ground) = target, by the Illinois variant of regula falsi: it keeps a sign-changing
    bracket like the spec's bisection but needs ~10 instead of 40 ΔE evaluations. Also returns
    whether each row met the target within 1e-6."""
    near, far = t_near.copy(), t_far.copy()
    g_near = -target.copy()  # ΔE − target at `near` (ΔE = 0 at the ground colour)
    g_far = lab_distance(linear_to_lab(reference + far[:, None] * direction), ground_lab) - target
    t = far.copy()
    side = np.zeros(len(t), dtype=np.int8)  # which end moved last, for the Illinois halving
    for _ in range(iterations):
        denom = g_far - g_near
        t = np.where(
            denom != 0, far - g_far * (far - near) / np.where(denom != 0, denom, 1.0), 0.5 * (near + far)
        )
        g = lab_distance(linear_to_lab(reference + t[:, None] * direction), ground_lab) - target
        below = g < 0
        near, g_near_new = np.where(below, t, near), np.where(below, g, g_near)
        far, g_far_new = np.where(below, far, t), np.where(below, g_far, g)
        # Illinois: when the same end survives twice, halve its value so the bracket keeps shrinking.
        g_far_new = np.where(below & (side == -1), 0.5 * g_far_new, g_far_new)
        g_near_new = np.where(~below & (side == 1), 0.5 * g_near_new, g_near_new)
        side = np.where(below, -1, 1).astype(np.int8)
        g_near, g_far = g_near_new, g_far_new
    error = np.abs(lab_distance(linear_to_lab(reference + t[:, None] * direction), ground_lab) - target)
    return t, error <= 1e-6


def sample_pair(
    rng: np.random.Generator,
    axis: str,
    delta_e_range: tuple[float, float],
    dichromat_max_delta_e: float,
    hue_jitter: float = 0.0,
    max_lightness: float = 1.0,
    candidates_per_round: int = 32,
    max_rounds: int = 32,
) -> ColourPair:
    """Spec §5 ``sample_pair`` on the isoluminant confusion line, vectorised: each round draws
    ``candidates_per_round`` attempts at once and keeps the first valid one (in draw order), so the
    result depends on the seed only. An attempt is valid when the far end of its segment reaches the
    drawn ΔE* and the simulated dichromat sees ΔE < ``dichromat_max_delta_e`` between the two.

    ``hue_jitter`` (h) and ``max_lightness`` (ℓ_hi) describe the per-dot jitter the pair will get;
    pairs whose jittered dots could leave [0, 1] are redrawn, so that no dot is ever clipped and
    isoluminance and dichromat invariance hold for every dot, not only for the pair."""
    k = candidates_per_round
    for _ in range(max_rounds):
        reference = rng.uniform(*REFERENCE_RANGE, size=(k, 3))
        target = rng.uniform(*delta_e_range, size=k)
        u_ground = rng.random(k)
        swap = rng.random(k) < 0.5
        direction = isoluminant_confusion_direction(axis, reference)
        t_min, t_max = _line_box_interval(reference, direction)
        t_ground = t_min + u_ground * (t_max - t_min)
        t_end = np.where(t_max - t_ground >= t_ground - t_min, t_max, t_min)
        ground = reference + t_ground[:, None] * direction
        ground_lab = linear_to_lab(ground)
        reachable = lab_distance(linear_to_lab(reference + t_end[:, None] * direction), ground_lab) >= target
        t_figure, solved = _solve_distance(reference, direction, ground_lab, target, t_ground, t_end)
        figure = reference + t_figure[:, None] * direction
        dichromat = dichromat_delta_e(figure, ground, axis)
        reach_jitter = hue_jitter * np.abs(t_figure - t_ground)[:, None] * np.abs(direction)
        unclipped = np.ones(k, dtype=bool)
        for colour in (figure, ground):
            unclipped &= np.all(colour - reach_jitter >= 0, axis=1)
            unclipped &= np.all((colour + reach_jitter) * max_lightness <= 1, axis=1)
        valid = reachable & solved & unclipped & (dichromat < dichromat_max_delta_e)
        if valid.any():
            i = int(np.argmax(valid))
            f, g = (ground[i], figure[i]) if swap[i] else (figure[i], ground[i])
            return ColourPair(
                axis=axis,
                figure=f,
                ground=g,
                direction=direction[i],
                t_span=float(abs(t_figure[i] - t_ground[i])),
                delta_e=float(delta_e76(f, g)),
                dichromat_delta_e=float(dichromat[i]),
            )
    raise RuntimeError(f"no {axis} colour pair found for ΔE in {delta_e_range}")  # a bug, not user input
