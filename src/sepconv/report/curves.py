"""Training curves: loss and accuracy per epoch (train and test) as a PNG."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from ..errors import SepconvError
from ..io import atomic_write_bytes


def history_records(history: Sequence[dict[str, Any]] | dict[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch records of a history: a list of records, or a ``history.json`` document."""
    records = history.get("epochs", []) if isinstance(history, dict) else list(history)
    if not records:
        raise SepconvError("the training history has no epochs to plot")
    return records


def plot_history(
    history: Sequence[dict[str, Any]] | dict[str, Any], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Draw loss (left) and accuracy in % (right) against the epoch, train and test, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    records = history_records(history)
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for split, style in (("train", "-"), ("test", "--")):
            losses = [r.get(f"{split}_loss") for r in records]
            accs = [r.get(f"{split}_accuracy") for r in records]
            if all(v is None for v in losses):
                continue
            ax_loss.plot(epochs, losses, style, marker=".", label=split)
            ax_acc.plot(
                epochs, [None if a is None else 100 * a for a in accs], style, marker=".", label=split
            )
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
        ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        png = figure_png(fig, title)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(png))


def figure_png(fig: Any, title: str = "") -> bytes:
    """A matplotlib figure as PNG bytes (titled, tightly laid out, 100 dpi)."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
