"""Widths over time: the filters of every adapted layer at each evaluation of adaptive
prune-and-grow (its ``history``), drawn as one line per layer, relative to the starting width."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SepconvError
from ..io import atomic_write_bytes
from .curves import figure_png


def plot_widths(
    history: Sequence[Mapping[str, Any]],
    original: Mapping[str, int],
    path: str | os.PathLike[str],
    title: str = "",
    end: float | None = None,
) -> None:
    """Left: each layer's width / its starting width against the epoch (one line per layer,
    coloured by depth, drawn on to ``end``, the training's last epoch); right: total params and
    the held-out accuracy at each evaluation. PNG, written atomically."""
    if not history:
        raise SepconvError("no evaluations to plot")
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    epochs = [0.0] + [float(r["epoch"]) for r in history]
    tail = [float(end)] if end is not None and end > epochs[-1] else []
    layers = list(original)
    fig, (ax_w, ax_p) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        cmap = plt.get_cmap("viridis")
        for k, name in enumerate(layers):
            widths = [original[name]] + [r["widths"].get(name, original[name]) for r in history]
            widths += [widths[-1]] * len(tail)
            ax_w.step(
                epochs + tail,
                [w / original[name] for w in widths],
                where="post",
                color=cmap(k / max(1, len(layers) - 1)),
                alpha=0.8,
                lw=1,
            )
        ax_w.set(xlabel="epoch", ylabel="filters / starting filters", title=f"{len(layers)} adapted layers (dark = early)")
        ax_w.grid(alpha=0.3)
        ax_p.plot(epochs[1:], [r["params"] / 1e3 for r in history], marker=".", label="params (K)")
        ax_p.set(xlabel="epoch", ylabel="params (K)", title="size and held-out accuracy")
        ax_acc = ax_p.twinx()
        ax_acc.plot(epochs[1:], [100 * r["probe_accuracy"] for r in history], "--", color="C1", marker=".")
        ax_acc.set_ylabel("held-out accuracy (%)", color="C1")
        ax_p.grid(alpha=0.3)
        png = figure_png(fig, title)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(png))
