"""Grad-CAM heat maps (Selvaraju et al. 2017), the visualisation of LdsConv's §4.4, for any model
and layer.

For an image, a target class c and a layer with activations A (channels × h × w)::

    α_k = mean over (h, w) of ∂y_c/∂A_k        cam = ReLU(Σ_k α_k A_k)

upsampled bilinearly to the input's size and divided by its maximum (a map that is 0 everywhere
stays 0). The target is the predicted class unless labels are given. The layer's output is
captured with a forward hook that hands the rest of the network a copy, so in-place operations
after the layer (``ReLU(inplace=True)``) cannot change what the map is computed from.

:func:`default_layer` picks the last module whose output still has a spatial extent (the input of
the global pooling in the zoo's networks), so a baseline and its compressed version are compared
at the same place. :func:`write_gradcam` writes overlays and a JSON record for a few test images
(``sepconv gradcam``); :func:`gradcam_figure` draws several models' maps of the same images side
by side (the study report).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..data.dataset import ImageDataset
from ..devices import tensor_like
from ..errors import SepconvError, UnknownNameError, did_you_mean
from ..io import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from .protocol import ReportMixin

# The most images one call explains (the maps and overlays are held in memory, and a page with more
# would not be read); also the bound of the commands' --images / --gradcam-images.
MAX_GRADCAM_IMAGES = 1024


@dataclass
class GradCam:
    """Maps (N, H, W) in [0, 1], the class each map explains and the model's predictions."""

    layer: str
    maps: torch.Tensor
    targets: list[int]
    predicted: list[int]
    probabilities: list[float]  # softmax probability of the target class


def _module(model: nn.Module, layer: str) -> nn.Module:
    names = dict(model.named_modules())
    if layer not in names or layer == "":
        raise UnknownNameError(
            f"the model has no layer {layer!r}{did_you_mean(layer, [n for n in names if n])}"
        )
    return names[layer]


def default_layer(model: nn.Module, input_size: Sequence[int]) -> str:
    """The last module (in the order outputs are produced) with a 4-D output larger than 1×1."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size, **tensor_like(model)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not order:
        raise SepconvError("the model has no layer with a spatial output to explain")
    return order[-1]


def grad_cam(
    model: nn.Module, images: torch.Tensor, layer: str | None = None, labels: torch.Tensor | None = None
) -> GradCam:
    """Grad-CAM maps of normalised ``images`` (N, C, H, W) at ``layer`` (default: :func:`default_layer`)
    for ``labels`` (default: the predicted classes). The model is evaluated in eval mode and left
    as it was."""
    if images.dim() != 4:
        raise SepconvError(f"Grad-CAM needs a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    layer = layer or default_layer(model, tuple(images.shape[1:]))
    module = _module(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise SepconvError(f"layer {layer!r} does not output a 4-D feature map")
        captured.append(out)
        return out.clone()  # later in-place ops change the copy, not the map's activations

    handle = module.register_forward_hook(hook)
    was_training = model.training
    try:
        model.eval()
        x = images.to(**tensor_like(model))
        with torch.enable_grad():
            logits = model(x)
            if len(captured) != 1:
                raise SepconvError(f"layer {layer!r} runs {len(captured)} times per forward; pick another")
            activations = captured[0]
            predicted = logits.argmax(dim=1)
            targets = predicted if labels is None else labels.to(predicted.device).long()
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, activations)
    finally:
        handle.remove()
        model.train(was_training)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam.float(), size=images.shape[2:], mode="bilinear", align_corners=False)
        cam = cam.clamp_min(0).squeeze(1)  # bilinear interpolation of non-negative values stays >= 0
        peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        cam = (cam / peak).cpu()
        probs = logits.detach().softmax(dim=1).gather(1, targets.view(-1, 1)).view(-1)
    return GradCam(layer, cam, targets.tolist(), predicted.tolist(), probs.cpu().tolist())


# --------------------------------------------------------------------------- pictures
def heat_colours(values: np.ndarray) -> np.ndarray:
    """A jet-like colour map of values in [0, 1]: (…, 3) uint8 from blue through green to red."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue peaks
    rgb = np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0)
    return (255 * rgb).round().astype(np.uint8)


def as_rgb(image: torch.Tensor) -> np.ndarray:
    """A uint8 (C, H, W) image as (H, W, 3) (grayscale repeated)."""
    array = image.detach().cpu().numpy().transpose(1, 2, 0)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The heat map blended over an (H, W, 3) uint8 image."""
    mixed = (1 - alpha) * image.astype(np.float64) + alpha * heat_colours(cam).astype(np.float64)
    return mixed.round().clip(0, 255).astype(np.uint8)


def _write_png(path: Path, array: np.ndarray, scale: int = 1) -> None:
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = buffer.getvalue()
    atomic_write_bytes(path, lambda f: f.write(data))


@dataclass
class GradCamReport(ReportMixin):
    """What :func:`write_gradcam` wrote."""

    layer: str
    indices: list[int]
    labels: list[int]
    predicted: list[int]
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        right = sum(p == t for p, t in zip(self.predicted, self.labels))
        return (
            f"Grad-CAM at {self.layer} for {len(self.indices)} test image(s) ({right} classified correctly); "
            f"{len(self.files)} file(s) written"
        )


def write_gradcam(
    model: nn.Module,
    dataset: ImageDataset,
    out: str | os.PathLike[str],
    layer: str | None = None,
    indices: Sequence[int] | None = None,
    count: int = 8,
    scale: int = 4,
    target: str = "predicted",
) -> GradCamReport:
    """Overlays (``gradcam_K.png``), a grid of all of them (``grid.png``: images, maps, overlays)
    and ``gradcam.json`` (layer, classes, maps) for test images ``indices`` (default: the first
    ``count``); ``target`` is ``predicted`` or ``label``."""
    if target not in ("predicted", "label"):
        raise SepconvError(f"target must be 'predicted' or 'label', got {target!r}")
    chosen = list(range(min(count, len(dataset)))) if indices is None else [int(i) for i in indices]
    if not chosen:
        raise SepconvError("no image to explain")
    if len(chosen) > MAX_GRADCAM_IMAGES:
        raise SepconvError(f"at most {MAX_GRADCAM_IMAGES} images per Grad-CAM call, got {len(chosen):,}")
    bad = [i for i in chosen if not 0 <= i < len(dataset)]
    if bad:
        raise SepconvError(f"image index {bad[0]} is outside the test split (0..{len(dataset) - 1})")
    folder = ensure_writable_dir(out)
    images = dataset.images[chosen]
    labels = dataset.labels[chosen]
    cam = grad_cam(model, dataset.normalize(images), layer, labels if target == "label" else None)
    report = GradCamReport(cam.layer, chosen, labels.tolist(), cam.predicted)
    rows: list[list[np.ndarray]] = [[], [], []]
    for k, index in enumerate(chosen):
        rgb = as_rgb(images[k])
        heat = cam.maps[k].numpy()
        mixed = overlay(rgb, heat)
        name = f"gradcam_{index}.png"
        _write_png(folder / name, mixed, scale)
        report.files.append(name)
        for row, picture in zip(rows, (rgb, heat_colours(heat), mixed)):
            row.append(picture)
    gap = np.full((rows[0][0].shape[0], 1, 3), 255, dtype=np.uint8)
    grid = np.concatenate(
        [np.concatenate([p for pic in row for p in (pic, gap)], axis=1) for row in rows], axis=0
    )
    _write_png(folder / "grid.png", grid, scale)
    report.files.append("grid.png")
    record = {
        "layer": cam.layer,
        "target": target,
        "indices": chosen,
        "labels": labels.tolist(),
        "classes": [dataset.class_names[i] for i in labels.tolist()],
        "predicted": cam.predicted,
        "probabilities": cam.probabilities,
        "maps": [np.round(m.numpy(), 4).tolist() for m in cam.maps],
    }
    atomic_write_text(folder / "gradcam.json", json.dumps(record))
    report.files.append("gradcam.json")
    return report


def gradcam_figure(
    entries: Sequence[tuple[str, GradCam]],
    images: torch.Tensor,
    classes: Sequence[str],
    labels: Sequence[int],
) -> Any:
    """One row per model (its name and maps overlaid on the same uint8 ``images``), the images on
    top: a matplotlib figure (the study report saves it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    fig, axes = plt.subplots(
        len(entries) + 1, n, figsize=(1.3 * n + 1.2, 1.35 * (len(entries) + 1)), squeeze=False
    )
    for k in range(n):
        rgb = as_rgb(images[k])
        axes[0][k].imshow(rgb)
        axes[0][k].set_title(str(classes[labels[k]]), fontsize=8)
        for row, (_, cam) in enumerate(entries, start=1):
            axes[row][k].imshow(overlay(rgb, cam.maps[k].numpy()))
            mark = "" if cam.predicted[k] == labels[k] else " ✗"
            axes[row][k].set_title(f"{classes[cam.predicted[k]]}{mark}", fontsize=7)
    for row, (name, cam) in enumerate(entries, start=1):
        axes[row][0].set_ylabel(f"{name}\n{cam.layer}", fontsize=7)
    axes[0][0].set_ylabel("image", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Grad-CAM (title: predicted class; ✗ = wrong)", fontsize=9)
    return fig
