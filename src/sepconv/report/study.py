"""Study reports: one Markdown page and one self-contained HTML page per study folder.

A *study* is a folder of models compared with each other (a baseline and its compressed versions).
The report holds a table of every model (params, MACs, accuracy, latency per runtime and batch,
realized and MAC speed-up over the baseline), an accuracy-vs-MACs plot of all methods, per-layer
width plots of the pruned models and latency bars. The Markdown page links its PNGs (written next
to it); the HTML page embeds them as base64 and needs nothing else.

Study-folder format
-------------------
A study folder ``DIR`` is read in this order:

1. ``DIR/study.json``, if present, lists the models explicitly::

       {"title": "ResNet-20 on CIFAR-10",            # optional, default: the folder name
        "baseline": "baseline",                       # optional: name of the reference model
        "models": [
          {"name": "baseline",                        # required, unique
           "method": "baseline",                      # optional, default: the name
           "checkpoint": "baseline/best.pt",          # optional, relative to DIR
           "accuracy": 0.9142,                        # optional, a fraction (0.9142 = 91.42 %)
           "params": 269722, "macs": 40551040,        # optional: measured from the checkpoint
           "input_size": [3, 32, 32],                 # optional, for measuring (default C,32,32)
           "latency": [{"runtime": "onnxruntime", "batch": 64, "median_ms": 9.1,
                        "iqr_ms": 0.4, "images_per_s": 7033}],   # optional, e.g. from `sepconv bench`
           "speedup": {"onnxruntime@64": 3.4}},       # optional: realized speed-up over the baseline
          ...]}

2. Otherwise every sub-folder of ``DIR`` (sorted by name) that holds a run is one model, named
   after the sub-folder; ``DIR`` itself counts as one when it holds a run. A run folder holds

   * ``summary.json`` as ``sepconv compress`` / recipes write it (``method``, ``accuracy``,
     ``params``, ``macs``, ``checkpoint``), and/or
   * ``model.pt`` / ``best.pt`` / ``last.pt`` with ``history.json`` as ``sepconv train`` writes them
     (accuracy = ``best_test_accuracy``), and optionally
   * ``latency.json``: the output of ``sepconv bench MODEL [--vs BASELINE] --json``; its rows for
     this model become the latency columns, its ``speedup`` the realized speed-up.

   The baseline is the model whose method (or name) is ``baseline``, if there is one.

``sepconv report DIR... --out REPORT_DIR --bench`` measures what the files do not give: every model
is timed interleaved with the baseline (:func:`sepconv.measure.latency.benchmark`). ``--gradcam DATA``
adds the Grad-CAM maps of every model with a checkpoint on the same test images of DATA, one row
per model (:mod:`.gradcam`), e.g. a baseline beside its LdsConv version.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from ..checkpoint import load_model
from ..data.dataset import with_stats
from ..data.registry import get_dataset
from ..errors import SepconvError
from ..io import atomic_write_bytes
from ..measure.latency import benchmark
from ..measure.profile import default_input_size, profile
from ..models.arch import get_arch, model_stats
from ..models.registry import build_from_arch
from .curves import figure_png
from .gradcam import MAX_GRADCAM_IMAGES, grad_cam, gradcam_figure

CHECKPOINT_NAMES = ("model.pt", "best.pt", "last.pt")


@dataclass
class LayerWidth:
    layer: str
    kept: int
    total: int | None  # width before pruning, when the unpruned architecture can be rebuilt


@dataclass
class StudyModel:
    name: str
    method: str
    checkpoint: Path | None = None
    accuracy: float | None = None  # fraction
    params: int | None = None
    macs: int | None = None
    input_size: tuple[int, ...] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    speedup: dict[str, float] = field(default_factory=dict)
    widths: list[LayerWidth] = field(default_factory=list)

    @property
    def pruned(self) -> bool:
        return any(w.total is not None and w.kept < w.total for w in self.widths)


@dataclass
class Study:
    name: str
    root: Path
    title: str
    models: list[StudyModel]
    baseline: str | None = None

    def model(self, name: str) -> StudyModel:
        return next(m for m in self.models if m.name == name)


# ------------------------------------------------------------------------------------ reading


def load_study(folder: str | os.PathLike[str], measure: bool = True, baseline: str | None = None) -> Study:
    """Read a study folder (see the module docstring); ``measure`` fills params, MACs and layer
    widths from the checkpoints where the files do not give them. ``baseline`` overrides the
    reference model's name."""
    root = Path(folder)
    if not root.is_dir():
        raise SepconvError(f"no study folder at {root}")
    if (root / "study.json").is_file():
        doc = _read_json(root / "study.json")
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            raise SepconvError(f"{root / 'study.json'} needs a 'models' list")
        models = [_model_from_entry(root, e, i) for i, e in enumerate(doc["models"])]
        title, chosen = str(doc.get("title") or root.resolve().name), doc.get("baseline")
    else:
        runs = ([root] if _is_run(root) else []) + [
            p for p in sorted(root.iterdir()) if p.is_dir() and _is_run(p)
        ]
        models = [_model_from_run(p, p.resolve().name) for p in runs]
        title, chosen = root.resolve().name, None
    chosen = baseline or chosen
    if not models:
        raise SepconvError(
            f"{root} holds no models (no study.json, and no sub-folder with a checkpoint or summary.json)"
        )
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise SepconvError(f"{root}: model names must be unique, got {names}")
    if chosen is None:
        chosen = next((m.name for m in models if "baseline" in (m.method.lower(), m.name.lower())), None)
    elif chosen not in names:
        raise SepconvError(f"{root}: baseline {chosen!r} is not one of the models {', '.join(names)}")
    study = Study(root.resolve().name, root, title, models, chosen)
    if measure:
        for m in study.models:
            _measure_static(m)
    return study


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SepconvError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SepconvError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _is_run(folder: Path) -> bool:
    return (folder / "summary.json").is_file() or any((folder / n).is_file() for n in CHECKPOINT_NAMES)


def _model_from_entry(root: Path, entry: Any, index: int) -> StudyModel:
    if not isinstance(entry, dict) or "name" not in entry:
        raise SepconvError(f"{root / 'study.json'}: model #{index + 1} needs a 'name'")
    model = StudyModel(name=str(entry["name"]), method=str(entry.get("method") or entry["name"]))
    if entry.get("checkpoint"):
        model.checkpoint = root / str(entry["checkpoint"])
    _apply_numbers(model, entry, root / "study.json")
    return model


def _model_from_run(folder: Path, name: str) -> StudyModel:
    model = StudyModel(name=name, method=name)
    summary = _read_json(folder / "summary.json") if (folder / "summary.json").is_file() else {}
    if not isinstance(summary, dict):
        raise SepconvError(f"{folder / 'summary.json'} must hold a JSON object")
    model.method = str(summary.get("method") or name)
    candidates = [str(summary["checkpoint"])] if summary.get("checkpoint") else []
    for candidate in [*candidates, *CHECKPOINT_NAMES]:
        if (folder / candidate).is_file():
            model.checkpoint = folder / candidate
            break
    if summary.get("accuracy") is None and (folder / "history.json").is_file():
        history = _read_json(folder / "history.json")
        if isinstance(history, dict) and history.get("best_test_accuracy") is not None:
            summary = {**summary, "accuracy": history["best_test_accuracy"]}
    _apply_numbers(model, summary, folder / "summary.json")
    if (folder / "latency.json").is_file():
        _apply_bench(model, _read_json(folder / "latency.json"), folder / "latency.json")
    return model


def _apply_numbers(model: StudyModel, entry: dict[str, Any], source: Path) -> None:
    try:
        if entry.get("accuracy") is not None:
            model.accuracy = float(entry["accuracy"])
        if entry.get("params") is not None:
            model.params = int(entry["params"])
        if entry.get("macs") is not None:
            model.macs = int(entry["macs"])
        if entry.get("input_size") is not None:
            model.input_size = tuple(int(s) for s in entry["input_size"])
        model.latency = [_latency_row(r) for r in entry.get("latency") or []]
        model.speedup = {str(k): float(v) for k, v in (entry.get("speedup") or {}).items()}
    except (TypeError, ValueError, KeyError) as exc:
        raise SepconvError(
            f"{source}: malformed entry for {model.name!r} ({type(exc).__name__}: {exc})"
        ) from None
    if model.accuracy is not None and not 0.0 <= model.accuracy <= 1.0:
        raise SepconvError(
            f"{source}: accuracy of {model.name!r} must be a fraction in [0, 1], got {model.accuracy}"
        )


def _latency_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "runtime": str(row["runtime"]),
        "batch": int(row["batch"]),
        "median_ms": float(row["median_ms"]),
        "iqr_ms": float(row.get("iqr_ms", 0.0)),
        "images_per_s": float(row.get("images_per_s", 1e3 * int(row["batch"]) / float(row["median_ms"]))),
    }


def _apply_bench(model: StudyModel, doc: Any, source: Path) -> None:
    """Take this model's rows (the first model of a `sepconv bench --json` output) and its speed-up."""
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or not doc["results"]:
        raise SepconvError(f"{source} is not the output of `sepconv bench --json`")
    first = doc.get("model") or doc["results"][0].get("model")
    try:
        model.latency = [_latency_row(r) for r in doc["results"] if r.get("model") == first]
        model.speedup = {str(k): float(v) for k, v in (doc.get("speedup") or {}).items()}
        model.speedup |= {str(k): float(v["median"]) for k, v in (doc.get("best") or {}).items()}
    except (TypeError, ValueError, KeyError) as exc:
        raise SepconvError(f"{source}: malformed latency rows ({type(exc).__name__})") from None


def _measure_static(model: StudyModel) -> None:
    """Params, MACs and per-layer widths from the checkpoint, where the files are silent."""
    if model.checkpoint is None:
        return

    net = load_model(str(model.checkpoint))
    if model.params is None or model.macs is None:
        prof = profile(net, model.input_size or default_input_size(net))
        model.params = prof.params if model.params is None else model.params
        model.macs = prof.macs if model.macs is None else model.macs
    model.widths = layer_widths(net)


def layer_widths(model: Any) -> list[LayerWidth]:
    """Output width of every conv layer, beside its width in the unpruned architecture (the
    model's architecture description replayed without its ``compact`` steps)."""
    kept = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    totals: dict[str, int] = {}
    arch = get_arch(model)
    if arch and "compact" in arch.names():
        try:
            reference = build_from_arch(arch.without("compact"))
        except SepconvError:
            reference = None
        if reference is not None:
            totals = {n: m.out_channels for n, m in reference.named_modules() if isinstance(m, nn.Conv2d)}
    return [LayerWidth(n, w, totals.get(n)) for n, w in kept.items()]


def measure_latency(
    study: Study,
    batches: Sequence[int] = (1, 64),
    runtimes: Sequence[str] = ("best",),
    repeats: int = 50,
    warmup: int = 10,
    threads: int | None = None,
) -> None:
    """Time every model with a checkpoint, interleaved with the baseline (the baseline alone when
    there is none), and store the rows and speed-ups in the study. ``best`` (the default) times
    every available runtime and adds the best-vs-best speed-up (``best@BATCH``)."""

    base = study.model(study.baseline) if study.baseline else None
    for m in study.models:
        if m.checkpoint is None:
            continue
        if base is not None and base.checkpoint is not None and m is not base:
            report = benchmark(
                str(m.checkpoint), vs=str(base.checkpoint), batches=batches, runtimes=runtimes,
                repeats=repeats, warmup=warmup, threads=threads, input_size=m.input_size,
                labels=(m.name, base.name),
            )  # fmt: skip
            m.speedup = dict(report.speedup) | {f"best@{b.batch}": b.median for b in report.best}
        else:
            report = benchmark(
                str(m.checkpoint), batches=batches, runtimes=runtimes, repeats=repeats, warmup=warmup,
                threads=threads, input_size=m.input_size, labels=(m.name,),
            )  # fmt: skip
        m.latency = [_latency_row(vars(r)) for r in report.results if r.model == m.name]


# ------------------------------------------------------------------------------------ writing


def write_reports(
    folders: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    bench: dict[str, Any] | None = None,
    baseline: str | None = None,
    gradcam: dict[str, Any] | None = None,
) -> list[Path]:
    """One ``NAME.md`` + ``NAME.html`` (+ PNGs) per study folder in ``out``; returns the pages.

    ``bench``: keyword arguments of :func:`measure_latency` to time the models first, or None.
    ``baseline``: the reference model's name in every study (default: see the module docstring).
    ``gradcam``: keyword arguments of :func:`study_gradcam` (``data``, ``images``, ``layer``), or None.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SepconvError(f"--out {out} exists and is not a folder")
    studies = [load_study(f, baseline=baseline) for f in folders]
    pages: list[Path] = []
    used: set[str] = set()
    for study in studies:
        if bench is not None:
            measure_latency(study, **bench)
        stem, k = study.name, 2
        while stem in used:  # two folders with the same name
            stem, k = f"{study.name}-{k}", k + 1
        used.add(stem)
        pages.extend(write_study_report(study, out, stem, gradcam))
    return pages


def study_gradcam(study: Study, data: str, images: int = 6, layer: str | None = None) -> bytes | None:
    """Grad-CAM maps of every model with a checkpoint on the first ``images`` test images of
    ``data``, one row per model (baseline first): a PNG, or None when no model has a checkpoint."""
    if not 1 <= images <= MAX_GRADCAM_IMAGES:
        raise SepconvError(f"Grad-CAM images must be within 1..{MAX_GRADCAM_IMAGES}, got {images}")
    dataset = get_dataset(data, train=False)
    chosen = dataset.images[:images]
    labels = dataset.labels[: len(chosen)].tolist()
    models = sorted((m for m in study.models if m.checkpoint is not None), key=lambda m: m.name != study.baseline)
    entries = []
    for m in models:
        net = load_model(str(m.checkpoint))
        stats = model_stats(net)  # each model sees the images as it was trained to
        seen = dataset if stats is None else with_stats(dataset, stats)
        entries.append((m.name, grad_cam(net, seen.normalize(chosen), layer)))
    return _png(gradcam_figure(entries, chosen, dataset.class_names, labels)) if entries else None


def write_study_report(
    study: Study, out: Path, stem: str | None = None, gradcam: dict[str, Any] | None = None
) -> list[Path]:
    stem = stem or study.name
    figures = _figures(study)
    if gradcam is not None and (figure := study_gradcam(study, **gradcam)) is not None:
        figures["gradcam"] = figure
    png_names = {key: f"{stem}-{key}.png" for key in figures}
    for key, data in figures.items():
        atomic_write_bytes(out / png_names[key], lambda f, d=data: f.write(d))
    markdown = render_markdown(study, png_names)
    page = render_html(study, figures)
    atomic_write_bytes(out / f"{stem}.md", lambda f: f.write(markdown.encode()))
    atomic_write_bytes(out / f"{stem}.html", lambda f: f.write(page.encode()))
    return [out / f"{stem}.md", out / f"{stem}.html"]


def latency_keys(study: Study) -> list[str]:
    """ "RUNTIME@BATCH" of every latency measured in the study, onnxruntime first, by batch."""
    keys = {(r["runtime"], r["batch"]) for m in study.models for r in m.latency}
    keys |= {_split_key(k) for m in study.models for k in m.speedup}
    order = {"best": 0, "onnxruntime": 1, "openvino": 2, "torch": 3}
    return [f"{r}@{b}" for r, b in sorted(keys, key=lambda rb: (order.get(rb[0], 2), rb[0], rb[1]))]


def _split_key(key: str) -> tuple[str, int]:
    runtime, _, batch = key.partition("@")
    return runtime, int(batch) if batch.isdigit() else 0


def table_rows(study: Study) -> tuple[list[str], list[list[str]]]:
    keys = latency_keys(study)
    base = study.model(study.baseline) if study.baseline else None
    header = ["model", "method", "params", "MACs", "accuracy"]
    timed = [k for k in keys if not k.startswith("best@")]  # best@B is a ratio, not one runtime's time
    header += [f"{k} ms" for k in timed] + [f"speed-up {k}" for k in keys]
    if base is not None:
        header.append("MAC speed-up")
    rows = []
    for m in study.models:
        lat = {f"{r['runtime']}@{r['batch']}": r for r in m.latency}
        row = [
            m.name + (" (baseline)" if base is m else ""),
            m.method,
            f"{m.params:,}" if m.params is not None else "–",
            f"{m.macs / 1e6:.2f} M" if m.macs is not None else "–",
            f"{100 * m.accuracy:.2f} %" if m.accuracy is not None else "–",
        ]
        row += [f"{lat[k]['median_ms']:.3f} ± {lat[k]['iqr_ms'] / 2:.3f}" if k in lat else "–" for k in timed]
        row += [f"{m.speedup[k]:.2f}×" if k in m.speedup else ("1.00×" if m is base else "–") for k in keys]
        if base is not None:
            ratio = base.macs / m.macs if base.macs and m.macs else None
            row.append(f"{ratio:.2f}×" if ratio else "–")
        rows.append(row)
    return header, rows


TABLE_NOTE = (
    "Latency: median ms per call ± half the inter-quartile range. Speed-up: median over interleaved "
    "pairs (baseline, model, baseline, model, ...) of time(baseline) / time(model), measured in one run; "
    "best@B: each model in the runtime where it is fastest at batch B against the baseline in its own "
    "fastest (ratio of medians of alternating blocks); "
    "MAC speed-up: MACs(baseline) / MACs(model), what the MAC count promises."
)


def render_markdown(study: Study, png_names: dict[str, str]) -> str:
    header, rows = table_rows(study)
    lines = [f"# {study.title}", "", f"Study folder: `{study.root}`", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", TABLE_NOTE, ""]
    for key, caption in _captions(study).items():
        if key in png_names:
            lines += [f"## {caption}", "", f"![{caption}]({png_names[key]})", ""]
    return "\n".join(lines)


def render_html(study: Study, figures: dict[str, bytes]) -> str:
    header, rows = table_rows(study)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(study.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>{esc(study.title)}</h1>",
        f"<p>Study folder: <code>{esc(str(study.root))}</code></p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        f"<p>{esc(TABLE_NOTE)}</p>",
    ]
    for key, caption in _captions(study).items():
        if key in figures:
            data = base64.b64encode(figures[key]).decode("ascii")
            parts += [
                f"<h2>{esc(caption)}</h2>",
                f'<img alt="{esc(caption)}" src="data:image/png;base64,{data}">',
            ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _captions(study: Study) -> dict[str, str]:
    captions = {"accuracy-macs": "Accuracy vs MACs", "latency": "Latency", "gradcam": "Grad-CAM"}
    for m in study.models:
        if m.pruned:
            captions[f"widths-{_slug(m.name)}"] = f"Layer widths of {m.name}"
    return captions


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


# ------------------------------------------------------------------------------------ figures


def _figures(study: Study) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import

    figures: dict[str, bytes] = {}
    if any(m.accuracy is not None and m.macs for m in study.models):
        figures["accuracy-macs"] = _accuracy_vs_macs(study)
    if latency_keys(study) and any(m.latency for m in study.models):
        figures["latency"] = _latency_bars(study)
    for m in study.models:
        if m.pruned:
            figures[f"widths-{_slug(m.name)}"] = _width_plot(m)
    return figures


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    try:
        return figure_png(fig)
    finally:
        plt.close(fig)


def _accuracy_vs_macs(study: Study) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = sorted({m.method for m in study.models})
    colors = plt.get_cmap("tab10")
    for i, method in enumerate(methods):
        points = [m for m in study.models if m.method == method and m.accuracy is not None and m.macs]
        if not points:
            continue
        ax.scatter([p.macs / 1e6 for p in points], [100 * p.accuracy for p in points], color=colors(i % 10),
                   label=method, s=40, zorder=3)  # fmt: skip
        for p in points:
            ax.annotate(
                p.name,
                (p.macs / 1e6, 100 * p.accuracy),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 3.9, not 3.9×10^0: ranges can be narrow
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set(
        xlabel="MACs per image (millions, log scale)", ylabel="top-1 accuracy (%)", title="Accuracy vs MACs"
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def _latency_bars(study: Study) -> bytes:
    import matplotlib.pyplot as plt

    keys = [k for k in latency_keys(study) if not k.startswith("best@")]
    models = [m for m in study.models if m.latency]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys) + 1, 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = [{f"{r['runtime']}@{r['batch']}": r for r in m.latency}.get(key) for m in models]
        medians = [r["median_ms"] if r else 0.0 for r in rows]
        half_iqr = [r["iqr_ms"] / 2 if r else 0.0 for r in rows]
        x = np.arange(len(models))
        ax.bar(x, medians, yerr=half_iqr, capsize=3, color=[plt.get_cmap("tab10")(i % 10) for i in x])
        ax.set_xticks(x, [m.name for m in models], rotation=30, ha="right", fontsize=8)
        ax.set(title=key, ylabel="median ms per call")
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _width_plot(model: StudyModel) -> bytes:
    import matplotlib.pyplot as plt

    widths = model.widths
    x = np.arange(len(widths))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(widths) + 2), 4))
    totals = [w.total if w.total is not None else w.kept for w in widths]
    ax.bar(x, totals, color="#d0d0d0", label="before pruning")
    ax.bar(x, [w.kept for w in widths], color="#1f77b4", label="kept")
    ax.set_xticks(x, [w.layer for w in widths], rotation=90, fontsize=6)
    ax.set(ylabel="output channels", title=f"Layer widths of {model.name}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
