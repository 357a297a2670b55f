"""A linear probe of the colour charts: how much of the task a linear read-out of a hand-made chroma
map solves (no training of features).

Per image, each pixel's distance to the plate's median colour in CIELAB's a*b* plane (hue and
saturation only), or for the luminance control the L* distance of the luminance image; zero
outside the plate, each map scaled to unit standard deviation. A ridge classifier (one-vs-all least
squares) on these maps then gives a test accuracy. On plates where the glyph always sits at the
same place and size, a per-pixel template per class is enough and the probe nears 100 %: the
charts then test template matching, not perception. Calibrated difficulties keep it low.
"""

from __future__ import annotations

import numpy as np

from .colour import LUMINANCE, linear_to_lab, srgb_decode

__all__ = ["deviation_maps", "linear_probe"]


def deviation_maps(images: np.ndarray, gray: bool) -> np.ndarray:
    """(N, H, W, 3) uint8 plates -> (N, H·W) deviation maps (see the module docstring)."""
    n, h, w, _ = images.shape
    yy, xx = np.mgrid[:h, :w]
    disc = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) < 0.42 * h
    linear = srgb_decode(images)
    if gray:
        lightness = linear_to_lab(np.repeat((linear @ LUMINANCE)[..., None], 3, axis=-1))[..., 0]
        deviation = np.abs(lightness - np.median(lightness[:, disc], axis=1)[:, None, None])
    else:
        ab = linear_to_lab(linear)[..., 1:]
        deviation = np.linalg.norm(ab - np.median(ab[:, disc], axis=1)[:, None, None, :], axis=-1)
    deviation = deviation * disc
    deviation /= deviation.reshape(n, -1).std(axis=1)[:, None, None] + 1e-9
    return deviation.reshape(n, -1)


def linear_probe(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    ridge: float = 10.0,
) -> dict[str, float]:
    """Test accuracy of ridge regression on the chroma maps and on the luminance maps.

    Images are (N, H, W, 3) uint8; labels integer class ids. Returns ``chroma_test_accuracy``,
    ``luminance_test_accuracy`` and ``chance`` (1 / number of classes)."""
    k = int(max(train_labels.max(), test_labels.max())) + 1
    result: dict[str, float] = {"chance": 1.0 / k}
    for name, gray in (("chroma", False), ("luminance", True)):
        f_train = np.c_[deviation_maps(train_images, gray), np.ones(len(train_images))]
        f_test = np.c_[deviation_maps(test_images, gray), np.ones(len(test_images))]
        weights = np.linalg.solve(
            f_train.T @ f_train + ridge * np.eye(f_train.shape[1]), f_train.T @ np.eye(k)[train_labels]
        )
        result[f"{name}_test_accuracy"] = float((np.argmax(f_test @ weights, axis=1) == test_labels).mean())
    return result
