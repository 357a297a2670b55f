"""Dot packing of a plate: random sequential addition (RSA) of non-overlapping discs in a disc.

Spec spec 01 (colour-chart data set) §4. The *reference semantics* are sequential:
proposals are drawn in blocks of 256 (``rng.random((256, 2))`` for the position, then
``rng.random(256)`` for the radius) and examined one after another; a proposal is accepted iff
``dx² + dy² >= (r + r_j + gap)²`` (float64) for every dot placed before it; a pass stops after
2,000 consecutive rejections (the rest of the block is discarded); at most 4,000 dots in all.

This implementation gives exactly that layout but examines a whole block at once: one vectorised
test of the 256 proposals against the dots placed before the block (a grid hash limits it to the
3×3 neighbouring cells), then a short sequential sweep over the few survivors, which only have to
be checked against the survivors accepted earlier in the same block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_SIZE = 256  # radii and gap below are in pixels at this render size and scale with it
PASSES = ((3.0, 7.5), (1.5, 3.0))  # radius ranges of pass 1 (large dots) and pass 2 (fillers)
GAP = 0.5
DISC_FRACTION = 0.47  # plate radius / render size
BLOCK = 256
MAX_CONSECUTIVE_REJECTIONS = 2000
MAX_DOTS = 4000


@dataclass(frozen=True)
class DotLayout:
    """Dot centres (N, 2) as (x, y) pixels and radii (N,) on a ``size``×``size`` canvas, in packing
    order, inside the disc of radius ``disc_radius`` about the canvas centre."""

    centres: np.ndarray
    radii: np.ndarray
    size: int

    @property
    def disc_radius(self) -> float:
        return DISC_FRACTION * self.size

    @property
    def gap(self) -> float:
        return GAP * self.size / REFERENCE_SIZE

    def coverage(self) -> float:
        return float(np.sum(np.pi * self.radii**2) / (np.pi * self.disc_radius**2))

    def rotated(self, angle: float, mirror: bool) -> DotLayout:
        """The layout rotated by ``angle`` about the canvas centre, mirrored left-right first if asked.
        Both are isometries, so non-overlap and the disc are preserved."""
        centre = self.size / 2
        offset = self.centres - centre
        if mirror:
            offset = offset * np.array([-1.0, 1.0])
        cos, sin = np.cos(angle), np.sin(angle)
        rotated = offset @ np.array([[cos, sin], [-sin, cos]])
        return DotLayout(rotated + centre, self.radii, self.size)


class _Grid:
    """Placed dots bucketed in square cells at least as wide as the largest possible contact
    distance, so any dot that can touch a proposal lies in the proposal's 3×3 cell neighbourhood."""

    FAR = -1e9  # empty slots hold a dot this far away, so they never conflict

    def __init__(self, size: int, cell: float, capacity: int = 8) -> None:
        self.cell = cell
        # +2: an empty border ring keeps every 3x3 neighbourhood inside the arrays.
        cells = int(np.ceil(size / cell)) + 3
        self.x = np.full((cells, cells, capacity), self.FAR)
        self.y = np.full_like(self.x, self.FAR)
        self.r = np.zeros_like(self.x)
        self.count = np.zeros((cells, cells), dtype=np.int64)
        offsets = np.arange(-1, 2)
        self._di, self._dj = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))

    def _cells(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.floor(y / self.cell).astype(np.int64) + 1, np.floor(x / self.cell).astype(np.int64) + 1

    def add(self, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> None:
        rows, cols = self._cells(x, y)
        for i, j, xi, yi, ri in zip(rows.tolist(), cols.tolist(), x.tolist(), y.tolist(), r.tolist()):
            k = int(self.count[i, j])
            if k == self.x.shape[2]:  # grow rather than drop: the layout must stay exact
                self.x, self.y, self.r = (
                    np.concatenate([a, np.full_like(a, fill)], axis=2)
                    for a, fill in ((self.x, self.FAR), (self.y, self.FAR), (self.r, 0.0))
                )
            self.x[i, j, k], self.y[i, j, k], self.r[i, j, k] = xi, yi, ri
            self.count[i, j] = k + 1

    def free(self, x: np.ndarray, y: np.ndarray, r: np.ndarray, gap: float) -> np.ndarray:
        """For each proposal, whether it clears every placed dot (the exact float64 test)."""
        if len(x) == 0:
            return np.ones(0, dtype=bool)
        i, j = self._cells(x, y)
        ni = i[:, None] + self._di[None, :]
        nj = j[:, None] + self._dj[None, :]
        used = int(self.count[ni, nj].max())
        if used == 0:
            return np.ones(len(x), dtype=bool)
        px, py, pr = (a[ni, nj, :used] for a in (self.x, self.y, self.r))
        dx = px - x[:, None, None]
        dy = py - y[:, None, None]
        reach = pr + r[:, None, None] + gap
        return np.all(dx * dx + dy * dy >= reach * reach, axis=(1, 2))


class _BlockedRaster:
    """Pixels where *any* proposal of the current pass is certainly rejected, to skip the exact test.

    A pixel is marked for a placed dot j when even its farthest corner is closer to dot j than
    ``r_j + gap + r_min`` (minus a margin far above float rounding); a proposal has radius ≥ r_min,
    so a centre in such a pixel overlaps dot j. Only sure rejections are filtered, so the layout is
    unchanged; late in a pass nearly every proposal is filtered here for the price of one lookup.
    """

    MARGIN = 1e-6

    def __init__(self, size: int, gap: float, r_min: float) -> None:
        self.blocked = np.zeros((size, size), dtype=bool)
        self.size = size
        self.extra = gap + r_min - 0.5 * np.sqrt(2.0) - self.MARGIN

    def add(self, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> None:
        reach = r + self.extra  # pixel-centre distance below which the whole pixel is blocked
        if len(reach) == 0 or reach.max() <= 0:
            return
        half = int(np.ceil(reach.max())) + 1
        offsets = np.arange(-half, half + 1)
        cols = np.floor(x).astype(np.int64)[:, None] + offsets[None, :]  # (K, W)
        rows = np.floor(y).astype(np.int64)[:, None] + offsets[None, :]
        dx2 = (cols + 0.5 - x[:, None]) ** 2
        dy2 = (rows + 0.5 - y[:, None]) ** 2
        inside = dy2[:, :, None] + dx2[:, None, :] < (reach * reach)[:, None, None]  # (K, W, W)
        inside &= ((rows >= 0) & (rows < self.size))[:, :, None] & ((cols >= 0) & (cols < self.size))[
            :, None, :
        ]
        k, a, b = np.nonzero(inside)
        self.blocked[rows[k, a], cols[k, b]] = True

    def certainly_rejected(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = np.clip(np.floor(x).astype(np.int64), 0, self.size - 1)
        iy = np.clip(np.floor(y).astype(np.int64), 0, self.size - 1)
        return self.blocked[iy, ix]


def _draw_blocks(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` blocks in the reference draw order: positions (256, 2), then radii (256,), per block."""
    u, radius = [], []
    for _ in range(count):
        u.append(rng.random((BLOCK, 2)))
        radius.append(rng.random(BLOCK))
    return np.concatenate(u), np.concatenate(radius)


def pack_dots(rng: np.random.Generator, size: int = REFERENCE_SIZE) -> DotLayout:
    """Random sequential addition on a ``size``×``size`` canvas (spec §4), exactly reproducible.

    Several blocks are drawn and examined together once acceptances become rare (fewer numpy calls
    per proposal); when a pass stops inside them, the generator is rewound and advanced by exactly
    the blocks the reference would have drawn, so the next pass sees the same numbers.
    """
    scale = size / REFERENCE_SIZE
    gap = GAP * scale
    disc = DISC_FRACTION * size
    centre = size / 2
    max_radius = max(hi for _, hi in PASSES) * scale
    grid = _Grid(size, cell=2 * max_radius + gap)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    rs: list[np.ndarray] = []
    placed = 0
    for r_lo, r_hi in PASSES:
        r_lo, r_hi = r_lo * scale, r_hi * scale
        rejections = 0  # consecutive, carried across blocks
        stopped = False
        blocks = 1  # blocks per step: grows while acceptances are rare
        raster = _BlockedRaster(size, gap, r_lo)
        if xs:
            raster.add(np.concatenate(xs), np.concatenate(ys), np.concatenate(rs))
        while not stopped and placed < MAX_DOTS:
            state = rng.bit_generator.state
            u, radius_u = _draw_blocks(rng, blocks)
            n = len(radius_u)
            radius = r_lo + (r_hi - r_lo) * radius_u
            rho = (disc - radius) * np.sqrt(u[:, 0])
            phi = 2 * np.pi * u[:, 1]
            x = centre + rho * np.cos(phi)
            y = centre + rho * np.sin(phi)
            open_ = np.flatnonzero(~raster.certainly_rejected(x, y))
            survivors = open_[grid.free(x[open_], y[open_], radius[open_], gap)]
            # Survivors clear every dot placed before this step; among themselves, a later one must
            # clear the earlier ones that were accepted. Same formula as the reference, same floats.
            sx, sy, sr = x[survivors], y[survivors], radius[survivors]
            dx = sx[:, None] - sx[None, :]
            dy = sy[:, None] - sy[None, :]
            reach = sr[:, None] + sr[None, :] + gap
            conflicts = dx * dx + dy * dy < reach * reach
            hit_by_accepted = np.zeros(len(survivors), dtype=bool)
            accepted: list[int] = []  # indices into survivors
            position = 0  # proposals before `position` have been examined
            stop_at = n - 1  # index of the proposal at which the pass stopped
            for k, s in enumerate(survivors.tolist()):
                if rejections + (s - position) >= MAX_CONSECUTIVE_REJECTIONS:
                    stopped, stop_at = True, position + (MAX_CONSECUTIVE_REJECTIONS - rejections) - 1
                    break
                rejections += s - position  # every non-survivor in between was rejected
                position = s + 1
                if hit_by_accepted[k]:
                    rejections += 1
                    if rejections >= MAX_CONSECUTIVE_REJECTIONS:
                        stopped, stop_at = True, s
                        break
                    continue
                accepted.append(k)
                hit_by_accepted |= conflicts[k]
                rejections = 0
                if placed + len(accepted) >= MAX_DOTS:
                    stopped, stop_at = True, s
                    break
            if not stopped:
                if rejections + (n - position) >= MAX_CONSECUTIVE_REJECTIONS:
                    stopped, stop_at = True, position + (MAX_CONSECUTIVE_REJECTIONS - rejections) - 1
                rejections += n - position
            if stopped and stop_at // BLOCK + 1 < blocks:
                rng.bit_generator.state = state  # give back the blocks the reference never drew
                _draw_blocks(rng, stop_at // BLOCK + 1)
            if accepted:
                idx = np.array(accepted)
                xs.append(sx[idx])
                ys.append(sy[idx])
                rs.append(sr[idx])
                grid.add(sx[idx], sy[idx], sr[idx])
                raster.add(sx[idx], sy[idx], sr[idx])
                placed += len(idx)
            # Few survivors per block: examine more blocks per step (any choice gives the same layout).
            blocks = 8 if len(survivors) < 8 * blocks else 1
    return DotLayout(np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1), np.concatenate(rs), size)


def pack_dots_reference(rng: np.random.Generator, size: int = REFERENCE_SIZE) -> DotLayout:
    """The plain sequential definition (one proposal at a time against every placed dot). Slow; it
    exists so that tests can prove :func:`pack_dots` gives the identical layout."""
    scale = size / REFERENCE_SIZE
    gap = GAP * scale
    disc = DISC_FRACTION * size
    centre = size / 2
    xs: list[float] = []
    ys: list[float] = []
    rs: list[float] = []
    for r_lo, r_hi in PASSES:
        r_lo, r_hi = r_lo * scale, r_hi * scale
        rejections = 0
        stopped = False
        while not stopped and len(rs) < MAX_DOTS:
            u = rng.random((BLOCK, 2))
            radius = r_lo + (r_hi - r_lo) * rng.random(BLOCK)
            # Positions are computed per block as in pack_dots: numpy's vectorised sin/cos may
            # differ from scalar calls in the last bit, and the layouts must match exactly.
            rho = (disc - radius) * np.sqrt(u[:, 0])
            phi = 2 * np.pi * u[:, 1]
            block_x, block_y = centre + rho * np.cos(phi), centre + rho * np.sin(phi)
            for b in range(BLOCK):
                r, x, y = float(radius[b]), float(block_x[b]), float(block_y[b])
                clear = all(
                    (px - x) * (px - x) + (py - y) * (py - y) >= (pr + r + gap) * (pr + r + gap)
                    for px, py, pr in zip(xs, ys, rs)
                )
                if clear:
                    xs.append(float(x))
                    ys.append(float(y))
                    rs.append(float(r))
                    rejections = 0
                    if len(rs) >= MAX_DOTS:
                        stopped = True
                        break
                else:
                    rejections += 1
                    if rejections >= MAX_CONSECUTIVE_REJECTIONS:
                        stopped = True
                        break
    return DotLayout(np.stack([np.array(xs), np.array(ys)], axis=1), np.array(rs), size)


def pool_layout_seed(seed: int, index: int) -> np.random.SeedSequence:
    """Seed of layout ``index`` of the layout pool (spec §6)."""
    return np.random.SeedSequence([seed, 10_000 + index])


def pack_pool_layout(seed: int, index: int, size: int) -> DotLayout:
    return pack_dots(np.random.default_rng(pool_layout_seed(seed, index)), size)
