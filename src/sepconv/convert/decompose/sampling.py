"""Response sampling for post-training decomposition ([Zhang16] §3, [He23] §3.2).

A conv layer with ``c`` inputs, ``n`` outputs and a kh×kw kernel computes ``Y = W·X`` where the
columns of ``X`` (``d = c·kh·kw`` rows, in ``F.unfold`` order channel, kh, kw) are input patches.
Decomposition needs ``X`` only at a few positions: per image, ``positions_per_image`` output
positions are drawn uniformly without replacement (seeded per layer name, so the original and the
partly decomposed network see the same images *and* the same positions).

**Statistics instead of patches.** Nothing here keeps the N sampled patches. Each batch of patch
rows updates, in float64,

* the means and centred co-moments of ``X`` (original network) and ``Δ = X − X'`` (``X'``: the
  partly decomposed network's patches): ``M_xx``, ``M_xΔ``, ``M_ΔΔ`` (d×d each, Chan's pairwise
  update, so no catastrophic cancellation between batches);
* the R factor of a streaming QR of ``[1, X'ᵀ]``, per input channel (``(kh·kw+1)²`` each) for the
  depthwise methods, or of the whole layer (``(d+1)²``) for channel decomposition.

Memory is O(d²) whatever N. What suffices for which method (``W``: the layer's weights, ``A``: the
approximation's effective dense weights):

* ``dw`` (Algorithm 1): the channel's R factor (its thin SVD equals that of ``X'_iᵀ``) and the
  diagonal block ``X_i X'_iᵀ`` (``C_i = W_i·X_i·X'_iᵀ``);
* ``dw-comp`` (Algorithm 2): also the off-diagonal blocks of ``X·X'ᵀ`` and ``X'·X'ᵀ``, because the
  accumulated residual ``R_{i-1}`` enters ``C_i = T_i·X'_iᵀ`` through every earlier channel;
* ``channel`` ([Zhang16]): the whole-layer R factor and ``X·X'ᵀ``;
* the reported relative error ``‖WX − AX'‖/‖WX‖`` needs ``M_xx``, ``M_xΔ``, ``M_ΔΔ``: written as
  ``(W−A)X + AΔ`` it stays accurate when the error is tiny (a Gram form ``‖Y‖² − 2⟨Y,Ŷ⟩ + ‖Ŷ‖²``
  would bottom out at ~1e-8).

The R factors give the regression its conditioning κ(X'), not the κ(X')² of normal equations. The
column of ones makes centring exact: the trailing block of R is the R factor of the centred data.

**Two ways to run the networks.** ``lockstep`` traces the model with ``torch.fx`` (target convs
as leaves) and walks its graph node by node over all batches at once, so each network runs
forward *once* however many layers are decomposed; the live activations of all sampled images are
held meanwhile (about 2×60 MB for 300 CIFAR images on a ResNet-56). ``replay`` (any model, also
untraceable ones) runs the networks forward up to the current layer once per layer: memory is one
batch, time grows with depth. ``auto`` picks lockstep when tracing succeeds and the images take
at most ``LOCKSTEP_BUDGET / LOCKSTEP_FACTOR`` bytes (64 MiB: 5,000+ CIFAR images, ~90 at 224²).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ...data.dataset import BatchLoader, ImageDataset
from ...errors import SepconvError
from ...graph.trace import trace

F64 = torch.float64
# ``auto`` sampling holds every image's live activations only if the images themselves take at
# most LOCKSTEP_BUDGET / LOCKSTEP_FACTOR bytes (live activations of two CNNs: ~tens × the input).
LOCKSTEP_BUDGET = 4 * 2**30
LOCKSTEP_FACTOR = 64
# A new module for the approximated network once a layer's statistics are complete (or None).
OnLayer = Callable[[str, "LayerStats"], nn.Module | None]


# --------------------------------------------------------------------------------------------
# Patches


def conv_geometry(conv: nn.Conv2d, in_hw: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of ``conv`` for an input of spatial size ``in_hw``."""
    pad = conv._reversed_padding_repeated_twice  # (left, right, top, bottom), also for "same"
    h = in_hw[0] + pad[2] + pad[3]
    w = in_hw[1] + pad[0] + pad[1]
    kh, kw = conv.kernel_size
    out_h = (h - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
    out_w = (w - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
    return int(out_h), int(out_w)


def extract_patches(x: torch.Tensor, conv: nn.Conv2d, positions: torch.Tensor) -> torch.Tensor:
    """The receptive fields of ``conv`` at flat output ``positions`` (B, p) of input ``x``.

    Returns (B·p, C·kh·kw), image-major, each row in ``F.unfold`` order; equal to
    ``F.unfold(x_padded, kernel, dilation, stride)`` at those columns (tested), but without
    materialising every patch of the feature map.
    """
    left, _, top, _ = pad = conv._reversed_padding_repeated_twice
    _, out_w = conv_geometry(conv, (x.shape[2], x.shape[3]))
    kh, kw = conv.kernel_size
    positions = positions.to(x.device)
    oy, ox = positions // out_w, positions % out_w
    rows = oy[..., None] * conv.stride[0] + torch.arange(kh, device=x.device) * conv.dilation[0]  # (B, p, kh)
    cols = ox[..., None] * conv.stride[1] + torch.arange(kw, device=x.device) * conv.dilation[1]  # (B, p, kw)
    b, c, h, w = x.shape
    bidx = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    if conv.padding_mode == "zeros":
        # Index the unpadded input and zero what falls in the padding: padding the whole feature
        # map for a few positions would cost more than the rest of the sampling.
        rows, cols = rows - top, cols - left
        inside = ((rows >= 0) & (rows < h))[:, :, :, None] & ((cols >= 0) & (cols < w))[:, :, None, :]
        patch = x[bidx, :, rows.clamp(0, h - 1)[:, :, :, None], cols.clamp(0, w - 1)[:, :, None, :]]
        patch = patch * inside[..., None].to(patch.dtype)
    else:
        xp = F.pad(x, pad, mode=conv.padding_mode)
        # Advanced indices around a slice: the broadcast dims (B, p, kh, kw) come first, then C.
        patch = xp[bidx, :, rows[:, :, :, None], cols[:, :, None, :]]
    return patch.permute(0, 1, 4, 2, 3).reshape(-1, c * kh * kw)


def layer_generator(seed: int, name: str) -> torch.Generator:
    """The position generator of layer ``name``: depends on the seed and the name only."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63))


def draw_positions(generator: torch.Generator, batch: int, n_positions: int, per_image: int) -> torch.Tensor:
    """``per_image`` distinct flat output positions per image, uniformly (all if fewer exist)."""
    if per_image >= n_positions:
        return torch.arange(n_positions).expand(batch, n_positions)
    keys = torch.rand(batch, n_positions, generator=generator)
    return keys.topk(per_image, dim=1).indices


# --------------------------------------------------------------------------------------------
# Statistics


class _CoMoments:
    """Streaming means and centred cross-moments of row vectors (Chan et al.'s pairwise update),
    kept on the device of the first rows (a GPU's float64 units do the products there)."""

    def __init__(self, d: int, with_delta: bool) -> None:
        self.n = 0
        self.mean_x = torch.zeros(d, dtype=F64)
        self.m_xx = torch.zeros(d, d, dtype=F64)
        self.with_delta = with_delta
        if with_delta:
            self.mean_d = torch.zeros(d, dtype=F64)
            self.m_xd = torch.zeros(d, d, dtype=F64)
            self.m_dd = torch.zeros(d, d, dtype=F64)

    def update(self, x: torch.Tensor, delta: torch.Tensor | None) -> None:
        nb = x.shape[0]
        if nb == 0:
            return
        if self.n == 0 and self.mean_x.device != x.device:
            for key in ("mean_x", "m_xx", "mean_d", "m_xd", "m_dd"):
                if hasattr(self, key):
                    setattr(self, key, getattr(self, key).to(x.device))
        n1, n = self.n, self.n + nb
        mx = x.mean(0)
        cx = x - mx
        dx = mx - self.mean_x
        self.m_xx += cx.T @ cx + torch.outer(dx, dx) * (n1 * nb / n)
        self.mean_x += dx * (nb / n)
        if self.with_delta:
            assert delta is not None
            md = delta.mean(0)
            cd = delta - md
            dd = md - self.mean_d
            self.m_xd += cx.T @ cd + torch.outer(dx, dd) * (n1 * nb / n)
            self.m_dd += cd.T @ cd + torch.outer(dd, dd) * (n1 * nb / n)
            self.mean_d += dd * (nb / n)
        self.n = n


def _qr_update(r: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """R factor of ``[R; rows]`` (batched over leading dims): a streaming QR of all rows so far."""
    stacked = rows if r is None else torch.cat([r, rows], dim=-2)
    return torch.linalg.qr(stacked, mode="r")[1]


@dataclass
class LayerStats:
    """Everything decomposition needs about one layer's sampled patches (see the module doc).

    ``channels``/``k2``: input channels and kernel area (``d = channels·k2``). ``symmetric``: the
    approximated network's patches are the original's (X' = X, no Δ moments are kept).
    ``qr``: which streaming R factors to keep, ``"channel"``, ``"full"`` or ``"none"``.
    """

    channels: int
    k2: int
    symmetric: bool = True
    qr: str = "channel"
    out_hw: tuple[int, int] = (1, 1)
    _mom: _CoMoments = field(init=False, repr=False)
    _r_channel: torch.Tensor | None = field(init=False, default=None, repr=False)
    _r_full: torch.Tensor | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.qr not in ("channel", "full", "none"):
            raise ValueError(f"qr must be channel, full or none, got {self.qr!r}")
        self._mom = _CoMoments(self.d, with_delta=not self.symmetric)

    @property
    def d(self) -> int:
        return self.channels * self.k2

    @property
    def n(self) -> int:
        return self._mom.n

    def update(self, x: torch.Tensor, xp: torch.Tensor | None = None) -> None:
        """Add patch rows ``x`` (N_b, d) of the original and ``xp`` of the approximated network."""
        x = x.detach().to(F64)
        if self.symmetric:
            if xp is not None:
                raise ValueError("a symmetric LayerStats takes no approximated patches")
            xp, delta = x, None
        else:
            xp = x if xp is None else xp.detach().to(F64)
            delta = x - xp
        if x.shape[1] != self.d:
            raise ValueError(f"patch rows have {x.shape[1]} columns, expected {self.d}")
        self._mom.update(x, delta)
        ones = torch.ones(x.shape[0], 1, dtype=F64, device=x.device)
        if self.qr == "channel":
            per_channel = xp.view(-1, self.channels, self.k2).transpose(0, 1)  # (c, N_b, k2)
            rows = torch.cat([ones.expand(self.channels, -1, 1), per_channel], dim=2)
            self._r_channel = _qr_update(self._r_channel, rows)
        elif self.qr == "full":
            self._r_full = _qr_update(self._r_full, torch.cat([ones, xp], dim=1))

    @classmethod
    def from_patches(
        cls,
        x: torch.Tensor,
        xp: torch.Tensor | None = None,
        *,
        channels: int,
        qr: str = "channel",
        chunk: int = 4096,
        out_hw: tuple[int, int] = (1, 1),
    ) -> LayerStats:
        """Statistics of explicit patch matrices ``x`` (and ``xp``) of shape (d, N), in chunks."""
        if x.dim() != 2 or x.shape[0] % channels:
            raise SepconvError(f"patches must be a (channels·k², N) matrix, got {tuple(x.shape)}")
        if xp is not None and xp.shape != x.shape:
            raise SepconvError(f"X' has shape {tuple(xp.shape)}, X has {tuple(x.shape)}")
        stats = cls(channels, x.shape[0] // channels, symmetric=xp is None, qr=qr, out_hw=out_hw)
        for start in range(0, x.shape[1], chunk):
            cols = slice(start, start + chunk)
            stats.update(x[:, cols].T, None if xp is None else xp[:, cols].T)
        return stats

    # The quantities the solvers use (CPU float64 copies, wherever the statistics were gathered)

    def mean_x(self) -> torch.Tensor:
        return _host(self._mom.mean_x)

    def mean_xp(self) -> torch.Tensor:
        return _host(self._mom.mean_x if self.symmetric else self._mom.mean_x - self._mom.mean_d)

    def moments(self, center: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(S_xx, S_xΔ, S_ΔΔ)``: second moments of X and Δ = X − X', centred or raw."""
        m = self._mom
        zero = torch.zeros(self.d, self.d, dtype=F64)
        s_xx = _host(m.m_xx)
        s_xd = _host(m.m_xd) if m.with_delta else zero
        s_dd = _host(m.m_dd) if m.with_delta else zero.clone()
        if not center:
            mean_x = _host(m.mean_x)
            mean_d = _host(m.mean_d) if m.with_delta else torch.zeros(self.d, dtype=F64)
            s_xx += m.n * torch.outer(mean_x, mean_x)
            s_xd = s_xd + m.n * torch.outer(mean_x, mean_d)
            s_dd += m.n * torch.outer(mean_d, mean_d)
        return s_xx, s_xd, s_dd

    def cross(self, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X·X'ᵀ, X'·X'ᵀ)``, centred or raw, from the moments of X and Δ."""
        s_xx, s_xd, s_dd = self.moments(center)
        s_xxp = s_xx - s_xd
        s_xpxp = s_xx - s_xd - s_xd.T + s_dd
        return s_xxp, (s_xpxp + s_xpxp.T) / 2

    def channel_factors(self, center: bool) -> torch.Tensor:
        """(c, ·, k2): per channel an F_i with F_iᵀF_i = X'_i·X'_iᵀ (centred or raw)."""
        if self._r_channel is None:
            if self.qr != "channel":
                raise ValueError("these statistics were collected without per-channel QR")
            return torch.zeros(self.channels, 0, self.k2, dtype=F64)
        r = self._r_channel
        return _host(r[:, 1:, 1:] if center else r[:, :, 1:])

    def full_factor(self, center: bool) -> torch.Tensor:
        """(·, d): an F with FᵀF = X'·X'ᵀ (centred or raw) for the whole layer."""
        if self._r_full is None:
            if self.qr != "full":
                raise ValueError("these statistics were collected without the whole-layer QR")
            return torch.zeros(0, self.d, dtype=F64)
        return _host(self._r_full[1:, 1:] if center else self._r_full[:, 1:])


def _host(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy (always a copy: callers may change it in place)."""
    return t.to("cpu", copy=True)


# --------------------------------------------------------------------------------------------
# Images


def _as_batch(item: Any) -> torch.Tensor:
    images = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise SepconvError("each batch must be an image tensor (B, C, H, W) or an (images, labels) pair")
    return images


class ImageSource:
    """The first ``n_images`` images of a tensor, an ``ImageDataset``, a ``BatchLoader`` or any
    iterable of batches; re-iterable (a one-shot iterator is cached)."""

    def __init__(self, images: Any, n_images: int | None = None, batch_size: int = 256) -> None:
        if n_images is not None and n_images < 1:
            raise SepconvError(f"the number of images must be positive, got {n_images}")
        if batch_size < 1:
            raise SepconvError(f"batch size must be positive, got {batch_size}")
        self.n_images = n_images
        if isinstance(images, ImageDataset):
            images = BatchLoader(images, batch_size=batch_size, train=False)
        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise SepconvError(f"images must be a (N, C, H, W) tensor, got shape {tuple(images.shape)}")
            images = list(images.split(batch_size)) if images.shape[0] else []
        elif not isinstance(images, Iterable):
            raise SepconvError(f"cannot sample images from a {type(images).__name__}")
        elif iter(images) is images:  # a generator: it could not be run through twice
            images = list(images)
        self._source = images
        if next(iter(self), None) is None:
            raise SepconvError("no images to sample responses from (the data set is empty)")

    def __iter__(self) -> Iterator[torch.Tensor]:
        left = self.n_images
        for item in self._source:
            batch = _as_batch(item)
            if left is not None:
                if left <= 0:
                    return
                batch = batch[:left]
                left -= batch.shape[0]
            if batch.shape[0]:
                yield batch


# --------------------------------------------------------------------------------------------
# Running the networks


class _StopForward(Exception):
    pass


class ResponseSampler:
    """Samples the inputs of target conv layers of an original and an approximated network.

    ``images``: see :class:`ImageSource`. ``positions_per_image`` output positions are drawn per
    image and layer from :func:`layer_generator`; the same images, batches and positions serve
    both networks. ``strategy`` is ``auto``, ``lockstep`` or ``replay`` (module doc).
    """

    def __init__(
        self,
        images: Any,
        *,
        n_images: int | None = None,
        positions_per_image: int = 10,
        seed: int = 0,
        batch_size: int = 256,
        strategy: str = "auto",
    ) -> None:
        if positions_per_image < 1:
            raise SepconvError(f"positions per image must be at least 1, got {positions_per_image}")
        if strategy not in ("auto", "lockstep", "replay"):
            raise SepconvError(f"unknown sampling strategy {strategy!r} (auto, lockstep, replay)")
        self.source = ImageSource(images, n_images, batch_size)
        self.positions_per_image = positions_per_image
        self.seed = seed
        self.strategy = strategy
        self.used_strategy = ""
        self.images = 0  # images seen by the last collect()
        self._dtype = torch.get_default_dtype()
        self._device = torch.device("cpu")

    def collect(
        self,
        original: nn.Module,
        layers: dict[str, str],
        approx: nn.Module | None = None,
        on_layer: OnLayer | None = None,
    ) -> dict[str, LayerStats]:
        """Statistics of every layer in ``layers`` (name → QR kind), in forward order.

        ``approx`` (same module names) supplies X'; without it X' = X. When a layer's statistics
        are complete, ``on_layer(name, stats)`` may return a module that replaces that layer in
        ``approx`` before any later layer is sampled — the multi-layer scheme of [He23] §3.6.
        Both networks are put in eval mode for the pass and restored afterwards.
        """
        param = next((p for p in original.parameters() if p.is_floating_point()), None)
        self._dtype = param.dtype if param is not None else torch.get_default_dtype()
        self._device = param.device if param is not None else torch.device("cpu")
        modes = [(m, m.training) for m in (original, approx) if m is not None]
        for m, _ in modes:
            m.eval()
        try:
            with torch.no_grad():
                graph = self._trace(original, layers) if self._try_lockstep() else None
                if graph is not None:
                    self.used_strategy = "lockstep"
                    return self._lockstep(graph, original, layers, approx, on_layer)
                self.used_strategy = "replay"
                return self._replay(original, layers, approx, on_layer)
        finally:
            for m, was_training in modes:
                m.train(was_training)

    # ---- shared helpers ----

    def _batches(self) -> Iterator[torch.Tensor]:
        # On the model's device in its dtype: images usually come as CPU float32.
        for batch in self.source:
            yield batch.to(device=self._device, dtype=self._dtype)

    def _new_stats(self, original: nn.Module, name: str, qr: str, symmetric: bool) -> LayerStats:
        conv = original.get_submodule(name)
        k2 = conv.kernel_size[0] * conv.kernel_size[1]
        return LayerStats(conv.in_channels, k2, symmetric=symmetric, qr=qr)

    def _sample_into(
        self,
        stats: LayerStats,
        conv: nn.Conv2d,
        gen: torch.Generator,
        x: torch.Tensor,
        xp: torch.Tensor | None,
    ) -> None:
        out_hw = conv_geometry(conv, (x.shape[2], x.shape[3]))
        stats.out_hw = out_hw
        pos = draw_positions(gen, x.shape[0], out_hw[0] * out_hw[1], self.positions_per_image)
        rows = extract_patches(x, conv, pos)
        rows_p = None if xp is None else extract_patches(xp, conv, pos)
        stats.update(rows, rows_p)

    @staticmethod
    def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, module)

    # ---- lockstep: one forward per network over the traced graph ----

    def _try_lockstep(self) -> bool:
        if self.strategy != "auto":
            return self.strategy == "lockstep"
        size = sum(b.numel() * b.element_size() for b in self._batches())
        return size * LOCKSTEP_FACTOR <= LOCKSTEP_BUDGET

    def _trace(self, original: nn.Module, layers: dict[str, str]) -> fx.Graph | None:
        targets = {original.get_submodule(name) for name in layers}
        try:
            graph = trace(original, leaves=targets, only_through=targets).graph
        except SepconvError:  # untraceable control flow: fall back to replay
            if self.strategy == "lockstep":
                raise SepconvError("the model cannot be traced by torch.fx; use strategy='replay'") from None
            return None
        calls = [str(n.target) for n in graph.nodes if n.op == "call_module" and str(n.target) in layers]
        if sorted(calls) != sorted(layers):
            if self.strategy == "lockstep":
                raise SepconvError("a target layer is called more than once or not at all in forward")
            return None
        return graph

    def _lockstep(
        self,
        graph: fx.Graph,
        original: nn.Module,
        layers: dict[str, str],
        approx: nn.Module | None,
        on_layer: OnLayer | None,
    ) -> dict[str, LayerStats]:
        nodes = list(graph.nodes)
        last_target = max(i for i, n in enumerate(nodes) if n.op == "call_module" and str(n.target) in layers)
        # Free each value after its last use: only the live activations are held.
        last_use: dict[fx.Node, int] = {}
        for i, node in enumerate(nodes):
            for arg in node.all_input_nodes:
                last_use[arg] = i
        frees: dict[int, list[fx.Node]] = {}
        for node, i in last_use.items():
            frees.setdefault(i, []).append(node)

        batches = list(self._batches())
        self.images = sum(b.shape[0] for b in batches)
        placeholders = [n for n in nodes if n.op == "placeholder"]
        interp_o = fx.Interpreter(original, graph=graph)
        interp_a = fx.Interpreter(approx, graph=graph) if approx is not None else None
        env_o: list[dict[fx.Node, Any]] = [{} for _ in batches]
        env_a: list[dict[fx.Node, Any]] | None = None  # None while approx computes what original does
        result: dict[str, LayerStats] = {}

        def run(interp: fx.Interpreter, env: dict[fx.Node, Any], node: fx.Node, batch: torch.Tensor) -> Any:
            if node.op == "placeholder":
                if node is placeholders[0]:
                    return batch
                if node.args:
                    return node.args[0]  # an optional forward argument: its default
                raise SepconvError("the model's forward takes more than one required input")
            interp.env = env
            return interp.run_node(node)

        for i, node in enumerate(nodes[: last_target + 1]):
            name = str(node.target)
            if node.op == "call_module" and name in layers:
                conv = original.get_submodule(name)
                stats = self._new_stats(original, name, layers[name], symmetric=approx is None)
                gen = layer_generator(self.seed, name)
                src = node.args[0]
                for b in range(len(batches)):
                    xp = None
                    if approx is not None:
                        xp = env_a[b][src] if env_a is not None else env_o[b][src]
                    self._sample_into(stats, conv, gen, env_o[b][src], xp)
                result[name] = stats
                new = on_layer(name, stats) if on_layer is not None else None
                if new is not None and approx is not None:
                    self._replace(approx, name, new)
                    if env_a is None:  # from here on the networks differ: give approx its own values
                        env_a = [
                            {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in e.items()}
                            for e in env_o
                        ]
            for b, batch in enumerate(batches):
                env_o[b][node] = run(interp_o, env_o[b], node, batch)
                if env_a is not None and interp_a is not None:
                    env_a[b][node] = run(interp_a, env_a[b], node, batch)
            for dead in frees.get(i, []):
                for envs in (env_o, env_a or []):
                    for e in envs:
                        e.pop(dead, None)
        return result

    # ---- replay: forward up to the layer, once per layer ----

    def _forward_to(self, model: nn.Module, name: str, batch: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
            captured.append(args[0])
            raise _StopForward

        handle = model.get_submodule(name).register_forward_pre_hook(grab)
        try:
            model(batch)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise SepconvError(f"layer {name} is not used by the model's forward")
        return captured[0]

    def _execution_order(self, original: nn.Module, layers: dict[str, str]) -> list[str]:
        order: list[str] = []
        counts: dict[str, int] = dict.fromkeys(layers, 0)
        handles = []
        for name in layers:

            def hook(_m: nn.Module, _a: Any, name: str = name) -> None:
                counts[name] += 1
                if counts[name] == 1:
                    order.append(name)

            handles.append(original.get_submodule(name).register_forward_pre_hook(hook))
        try:
            original(next(self._batches())[:1])
        finally:
            for h in handles:
                h.remove()
        missing = [n for n, k in counts.items() if k == 0]
        if missing:
            raise SepconvError(f"layer {missing[0]} is not used by the model's forward")
        shared = [n for n, k in counts.items() if k > 1]
        if shared:
            raise SepconvError(
                f"layer {shared[0]} is called more than once in forward; it cannot be replaced"
            )
        return order

    def _replay(
        self,
        original: nn.Module,
        layers: dict[str, str],
        approx: nn.Module | None,
        on_layer: OnLayer | None,
    ) -> dict[str, LayerStats]:
        result: dict[str, LayerStats] = {}
        diverged = False
        self.images = sum(b.shape[0] for b in self._batches())
        for name in self._execution_order(original, layers):
            conv = original.get_submodule(name)
            stats = self._new_stats(original, name, layers[name], symmetric=approx is None)
            gen = layer_generator(self.seed, name)
            for batch in self._batches():
                x = self._forward_to(original, name, batch)
                xp = None
                if approx is not None:
                    xp = self._forward_to(approx, name, batch) if diverged else x
                self._sample_into(stats, conv, gen, x, xp)
            result[name] = stats
            new = on_layer(name, stats) if on_layer is not None else None
            if new is not None and approx is not None:
                self._replace(approx, name, new)
                diverged = True
        return result
