"""Why training stalls on the colour charts, measured: initial loss and time to leave the plateau.

Two measurements. The first runs (``init``, and the ``dsc-pruned-*`` escape runs on level 0.75) were
made on the first difficulty scale, before plate.py's LEVEL_1 was softened (commit 7b14289's
plate.py); the results record that in their ``data`` field, and rerunning them now measures the
current scale. The later runs are on the current ``paper`` preset:

* ``init``: the cross-entropy of freshly initialised ResNet-20/32/56 (regular and separable) on 512
  training images, in training mode, over 5 seeds, with the zoo's initialisation and with the last
  BatchNorm γ of every residual branch set to 0 (``zero_init_residual``). A uniform guess scores
  ln 10 = 2.30; far above it, the network starts confidently wrong.
* ``escape``: training runs stopped as soon as they leave the plateau: the step at which an
  exponential moving average (over 50 steps) of the training loss first falls below 0.9 · ln 10
  (the engine's stall threshold), or none within ``--max-epochs``. Configurations differ in one
  factor at a time: initialisation, soft pruning from the first step (group coupling, PCA-FPGM 40 %,
  the old recipes) or none, warm-up, and batch/lr. The ``r56-standard-*`` rows measure ResNet-56 on
  the default (``standard``) charts the adaptive benchmark trains on, at lr 0.05 and 0.1.

* ``diagnose``: what a stalled network looks like, against runs that trained: for trained run
  folders (``summary.json`` + ``model.pt``, e.g. the calibration's), the share of each stage's
  output variance that depends on the input (variance over images of each unit, averaged, over the
  variance over images and positions), each stage's output size (RMS), the share of the last
  stage's output units that are on (after its final ReLU), the spread over images of
  the pooled features the classifier reads (relative to their size) and of the logits, on 256 test
  images.

Results: ``benchmarks/results/stall_study.{json,md}``.

    nice -n 10 .venv/bin/python benchmarks/stall_study.py init
    nice -n 10 .venv/bin/python benchmarks/stall_study.py escape --seeds 0 1 --max-epochs 4
    .venv/bin/python benchmarks/stall_study.py diagnose --runs runs/colorchart_calibration/*/level*
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from sepconv.train.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runpool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "stall_study"
DATA = "colorchart:difficulty=0.5"  # `paper` before it got its contrast spread (faint 0.95)
EMA = 50

# Measured on the first difficulty scale (see plate.py): strong clutter. Rerun now, it names the current scale.
OLD_SCALE = "colorchart:difficulty=0.75"
# name -> settings: separable, zero_init (zero_init_residual), prune (PCA-FPGM 40 %, group coupling,
# masks from the first step: the old recipes), warmup epochs, and optionally data, lr, batch_size.
CONFIGS: dict[str, dict[str, Any]] = {
    "dsc-pruned-default-init": {"separable": True, "zero_init": False, "prune": True, "warmup": 1.0, "data": OLD_SCALE},
    "dsc-pruned-zero-init": {"separable": True, "zero_init": True, "prune": True, "warmup": 1.0, "data": OLD_SCALE},
    "r20-default-init": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0},
    "r20-default-init-lr0.1": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.1},
    "r20-default-init-lr0.02": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.02},
    "r20-default-init-b16": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "batch_size": 16},
    "r20-default-init-no-warmup": {"separable": False, "zero_init": False, "prune": False, "warmup": 0.0},
    "dsc-default-init": {"separable": True, "zero_init": False, "prune": False, "warmup": 1.0},
    "dsc-default-init-lr0.1": {"separable": True, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.1},
    "dsc-pruned-default-init-lr0.1": {"separable": True, "zero_init": False, "prune": True, "warmup": 1.0, "lr": 0.1},
    "r20-zero-init-lr0.1": {"separable": False, "zero_init": True, "prune": False, "warmup": 1.0, "lr": 0.1},
    "r20-default-init-b128-lr0.4": {
        "separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.4, "batch_size": 128,
    },
    "dsc-pruned-trained2": {"separable": True, "zero_init": False, "prune": True, "start_epoch": 2, "warmup": 1.0},
    # ResNet-56 on the default (`standard`) charts the adaptive benchmark trains on (issue 18's stalls at lr 0.05).
    "r56-standard-lr0.05": {"model": "resnet56", "separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "data": "colorchart"},
    "r56-standard-lr0.1": {"model": "resnet56", "separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.1, "data": "colorchart"},
    # The calibration's setting that stalled (faint 0.9, zoo init, lr 0.1), and the same with the
    # classifier initialised to zero: logits start at 0 (loss ln 10), so the first steps do not drive
    # the last stage's outputs below their ReLU to undo a confidently wrong start (see `diagnose`).
    "r20-faint0.9-lr0.1": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.1, "data": "colorchart:difficulty=0.5,faint=0.9"},
    "r20-faint0.9-lr0.1-zero-fc": {"separable": False, "zero_init": False, "zero_fc": True, "prune": False, "warmup": 1.0, "lr": 0.1, "data": "colorchart:difficulty=0.5,faint=0.9"},
    # The same charts at lower learning rates (the recipes' 0.05, and 0.02): at lr 0.1 the calibration's
    # runs on faint 0.6/0.8/0.9 stalled or left the plateau only at epoch 7.
    "r20-faint0.8-lr0.05": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.05, "data": "colorchart:difficulty=0.5,faint=0.8"},
    "r20-faint0.8-lr0.02": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.02, "data": "colorchart:difficulty=0.5,faint=0.8"},
    # The same charts with the input's colours whitened (a fixed 1x1 conv in front of the network,
    # the inverse square root of the training pixels' 3x3 colour covariance): after per-channel
    # normalisation the two chroma directions carry a third of the luminance direction's std, so a
    # random first layer sees mostly luminance jitter and little of the hue cue.
    "r20-faint0.8-lr0.05-whiten": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.05, "whiten": True, "data": "colorchart:difficulty=0.5,faint=0.8"},
    # A curriculum: one epoch on the `standard` charts (where ResNets leave the plateau within
    # about a epoch), then the hard charts from those weights with a fresh schedule. If what is
    # hard to find is the colour cue itself, a network that has found it on clear plates should
    # leave the hard charts' plateau at once.
    "r20-faint0.8-lr0.05-curriculum1": {"separable": False, "zero_init": False, "prune": False, "warmup": 1.0, "lr": 0.05, "curriculum": ("colorchart", 1), "data": "colorchart:difficulty=0.5,faint=0.8"},
}  # fmt: skip


def colour_whitening(data: Any, images: int = 1000) -> torch.nn.Conv2d:
    """A frozen 1x1 conv mapping normalised pixels to ZCA-whitened colours (identity covariance)."""
    pixels = data.normalize(data.images[:images]).permute(1, 0, 2, 3).reshape(3, -1).double()
    values, vectors = torch.linalg.eigh(torch.cov(pixels))
    matrix = vectors @ torch.diag(values.clamp_min(1e-6).rsqrt()) @ vectors.T
    conv = torch.nn.Conv2d(3, 3, 1, bias=False)
    conv.weight.data.copy_(matrix.float().reshape(3, 3, 1, 1))
    conv.weight.requires_grad_(False)
    return conv


def _write(name: str, record: dict[str, Any]) -> None:
    from sepconv.io import atomic_write_text

    path = RESULTS / "stall_study.json"
    whole = json.loads(path.read_text()) if path.is_file() else {}
    whole[name] = record
    atomic_write_text(path, json.dumps(whole, indent=2))
    atomic_write_text(RESULTS / "stall_study.md", markdown(whole))


def initial_losses(args: argparse.Namespace) -> None:
    import torch.nn.functional as F

    from sepconv.convert import to_separable
    from sepconv.data import get_dataset
    from sepconv.data.dataset import BatchLoader
    from sepconv.models import create_model

    data = get_dataset(DATA, train=True)
    x, y = next(iter(BatchLoader(data.subset(range(512)), batch_size=512, train=False)))
    rows = []
    for depth in args.depths:
        for separable in (False, True):
            row: dict[str, Any] = {"depth": depth, "separable": separable}
            for zero_init in (False, True):
                losses = []
                for seed in range(5):
                    torch.manual_seed(seed)
                    model = create_model(
                        f"resnet{depth}", **({"zero_init_residual": True} if zero_init else {})
                    )
                    if separable:
                        model, _ = to_separable(model)
                    with torch.no_grad():
                        losses.append(float(F.cross_entropy(model.train()(x), y)))
                row["zero_init" if zero_init else "default"] = losses
            rows.append(row)
            print(row, flush=True)
    _write("init", {"data": DATA, "images": 512, "seeds": 5, "rows": rows})


class EscapeMeter(Callback):
    """The EMA of the training loss per step; stops training once it is below ``threshold`` (at the
    end of that epoch: the engine checks ``should_stop`` after each epoch)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.ema: float | None = None
        self.escape_step: int | None = None
        self.trace: list[float] = []

    def after_step(self, trainer: Any, batch_index: int, loss: float) -> None:
        self.ema = loss if self.ema is None else self.ema + (loss - self.ema) * (2 / (EMA + 1))
        if trainer.global_step % 10 == 0:
            self.trace.append(round(self.ema, 4))
        if self.escape_step is None and trainer.global_step > EMA and self.ema < self.threshold:
            self.escape_step = trainer.global_step
            trainer.should_stop = True


def escape_one(job: tuple[str, int, int]) -> dict[str, Any]:
    from sepconv.convert import to_separable
    from sepconv.data import get_dataset
    from sepconv.models import create_model
    from sepconv.prune.soft import SoftPruner
    from sepconv.train.api import train
    from sepconv.train.rng import seed_everything

    name, seed, max_epochs = job
    cfg = CONFIGS[name]
    spec = cfg.get("data", DATA)
    data, test = get_dataset(spec, train=True), get_dataset(spec, train=False)
    seed_everything(seed)
    model = create_model(
        cfg.get("model", "resnet20"), **({"zero_init_residual": True} if cfg["zero_init"] else {})
    )
    if cfg.get("zero_fc"):
        torch.nn.init.zeros_(model.fc.weight)
        torch.nn.init.zeros_(model.fc.bias)
    if cfg["separable"]:
        model, _ = to_separable(model)
    if cfg.get("whiten"):
        model = torch.nn.Sequential(colour_whitening(data), model)
    meter = EscapeMeter(0.9 * math.log(data.num_classes))
    callbacks: list[Any] = [meter]
    if cfg["prune"]:
        pruner = SoftPruner(
            "pca-fpgm",
            0.4,
            grad_mask=True,
            coupling="group",
            input_shape=(3, 32, 32),
            start_epoch=cfg.get("start_epoch", 0),
        )
        callbacks.insert(0, pruner)
    settings = runpool.schedule_settings(cfg.get("schedule", "recipe"), max_epochs, cfg["warmup"])
    settings.update({k: cfg[k] for k in ("lr", "batch_size") if k in cfg})
    curriculum: dict[str, Any] = {}
    if cfg.get("curriculum"):
        easy_spec, easy_epochs = cfg["curriculum"]
        easy, easy_test = get_dataset(easy_spec, train=True), get_dataset(easy_spec, train=False)
        first = train(
            model, easy, test_data=easy_test, quiet=True, seed=seed,
            **{**settings, "epochs": easy_epochs, "warmup_epochs": 0.5 * easy_epochs, "schedule": "constant"},
            on_stall="warn",
        )  # fmt: skip
        model = first.model
        curriculum = {"data": easy_spec, "epochs": easy_epochs, "test_accuracy": first.history[-1]["test_accuracy"]}
    trainer = train(
        model, data, test_data=test, quiet=True, callbacks=callbacks, **settings, seed=seed, on_stall="warn"
    )
    steps_per_epoch = trainer.batches_per_epoch
    record = {
        "config": name,
        "data": spec,
        "settings": cfg,
        "seed": seed,
        "escape_step": meter.escape_step,
        "escape_epoch": None if meter.escape_step is None else meter.escape_step / steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": settings["batch_size"],
        "images_to_escape": None if meter.escape_step is None else meter.escape_step * settings["batch_size"],
        "epochs_run": len(trainer.history),
        "max_epochs": max_epochs,
        "test_accuracy_at_stop": trainer.history[-1]["test_accuracy"],
        "ema_trace_every_10_steps": meter.trace,
        **({"curriculum": curriculum} if curriculum else {}),
    }
    print(
        f"{name} seed {seed}: escape at step {meter.escape_step} ({record['escape_epoch']} epochs)",
        flush=True,
    )
    return record


def escape(args: argparse.Namespace) -> None:
    path = RESULTS / "stall_study.json"
    runs: list[dict[str, Any]] = (
        (json.loads(path.read_text()) if path.is_file() else {}).get("escape", {}).get("runs", [])
    )
    have = {(r["config"], r["seed"]) for r in runs}
    jobs = [(c, s, args.max_epochs) for s in args.seeds for c in args.configs if (c, s) not in have]

    def done(job: Any, ok: bool, value: Any) -> None:
        if not ok:
            return
        # Several processes may add runs: merge with what the file holds now, by (config, seed).
        now = (json.loads(path.read_text()) if path.is_file() else {}).get("escape", {}).get("runs", [])
        merged = {(r["config"], r["seed"]): r for r in [*runs, *now, value]}
        runs[:] = list(merged.values())
        _write("escape", {"data": DATA, "ema_steps": EMA, "threshold": "0.9 ln 10", "runs": runs})

    runpool.run_jobs(jobs, escape_one, args.jobs, args.threads, on_done=done)


STAGES = ("bn1", "layer1", "layer2", "layer3")


def diagnose_one(folder: Path, images: int = 256) -> dict[str, Any]:
    from sepconv.checkpoint import load_model
    from sepconv.data import get_dataset
    from sepconv.data.dataset import BatchLoader

    summary = json.loads((folder / "summary.json").read_text())
    model = load_model(folder / summary.get("checkpoint", "model.pt")).eval()
    test = get_dataset(summary["data"], train=False)
    x, _ = next(iter(BatchLoader(test.subset(range(images)), batch_size=images, train=False)))
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach())
        )
        for name in STAGES
        if name in modules
    ]
    with torch.no_grad():
        logits = model(x)
    for hook in hooks:
        hook.remove()
    shares, rms = {}, {}
    last = outputs[STAGES[-1]]
    pooled = last.mean(dim=(2, 3))  # what the classifier reads
    for name, out in outputs.items():
        rms[name] = float(out.pow(2).mean().sqrt())
        # Share of the variance that follows the input: per unit (channel, position) over images,
        # against the whole variance over images and positions of each channel.
        over_images = out.var(dim=0).mean()
        overall = out.transpose(0, 1).flatten(1).var(dim=1).mean()
        shares[name] = float(over_images / overall.clamp_min(1e-12))
    stall = None
    history = folder / "train" / "history.json"
    if history.is_file():
        stall = json.loads(history.read_text()).get("stall")
    return {
        "run": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
        "data": summary["data"],
        "accuracy": summary["accuracy"],
        "stalled": bool(stall),
        "input_share": shares,
        "rms": rms,
        # Units of the last stage's output that are on (> 0 after its final ReLU), over images and positions.
        "active_fraction": float((last > 0).float().mean()),
        # Spread over images of the pooled features, against their size: near 0 when every image
        # ends as the same vector, whatever the maps before pooling do.
        "pooled_spread": float(pooled.std(dim=0).mean() / pooled.abs().mean().clamp_min(1e-12)),
        "logit_std_over_images": float(logits.std(dim=0).mean()),
    }


def diagnose(args: argparse.Namespace) -> None:
    rows = [
        diagnose_one(Path(folder).resolve())
        for folder in args.runs
        if (Path(folder) / "summary.json").is_file()
    ]
    for row in rows:
        print(row, flush=True)
    _write("diagnose", {"images": 256, "rows": rows})


def markdown(whole: dict[str, Any]) -> str:
    lines = ["# Why training stalls on the colour charts", ""]
    if "init" in whole:
        init = whole["init"]
        lines += [
            f"## Initial loss (`{init['data']}`, {init['images']} training images, {init['seeds']} seeds, training mode)",
            "",
            "A uniform guess scores ln 10 = 2.30. Mean (max) over seeds.",
            "",
            "| model | zoo initialisation | γ = 0 in each residual branch's last BN |",
            "|---|---|---|",
        ]
        for r in init["rows"]:
            name = f"ResNet-{r['depth']}" + (" DSC" if r["separable"] else "")
            cells = [f"{sum(v) / len(v):.2f} ({max(v):.2f})" for v in (r["default"], r["zero_init"])]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        lines.append("")
    if "escape" in whole:
        esc = whole["escape"]
        lines += [
            "## Time to leave the plateau (ResNet-20, regular and separable; ResNet-56 in the `r56-` rows)",
            "",
            f"Step at which the {esc['ema_steps']}-step moving average of the training loss first falls below"
            f" {esc['threshold']} (the engine's stall threshold); `–` = not within the epochs run. `pruned` ="
            " PCA-FPGM 40 %, group coupling, masks from the first step (the old recipes). `whiten`: a frozen"
            " 1x1 conv that whitens the input's colours (chroma as strong as luminance). `curriculum1`: one"
            " epoch on the `standard` charts first (constant lr after half an epoch of warm-up), then the"
            " charts named, from those weights, with a fresh schedule; its step counts only the second phase,"
            f" and {esc['ema_steps'] + 1} is the first step the moving average can report. Test accuracy at"
            " stop is measured at the end of the epoch the run left the plateau in, at its peak learning rate.",
            "",
            "| configuration | data | seed | escape step | epochs | images | batch | test acc at stop % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(esc["runs"], key=lambda r: (r["config"], r["seed"])):
            step = "–" if r["escape_step"] is None else str(r["escape_step"])
            epochs = "–" if r["escape_epoch"] is None else f"{r['escape_epoch']:.2f}"
            images = "–" if r["images_to_escape"] is None else f"{r['images_to_escape']:,}"
            lines.append(
                f"| {r['config']} | `{r.get('data', esc['data'])}` | {r['seed']} | {step} (of {r['epochs_run'] * r['steps_per_epoch']}) | {epochs}"
                f" | {images} | {r['batch_size']} | {100 * r['test_accuracy_at_stop']:.1f} |"
            )
        lines.append("")
    if "diagnose" in whole:
        rows = whole["diagnose"]["rows"]
        lines += [
            "## What a stalled network looks like (trained ResNet-20 runs, 256 test images)",
            "",
            "Input share: the part of a stage's output variance that changes with the image (variance over"
            " images of each unit, averaged, over the variance over images and positions); 1 = all of it,"
            " 0 = the stage computes the same map for every image. Logit spread: std over images of each"
            " logit, averaged. Pooled spread: std over images of the pooled last-stage features over their"
            " mean magnitude. Units on: the share of the last stage's outputs above 0 (after its final ReLU).",
            "",
            "| run | data | stalled | accuracy % | "
            + " | ".join(f"{s} input share" for s in STAGES)
            + f" | {STAGES[-1]} RMS | {STAGES[-1]} units on | pooled spread | logit spread |",
            "|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|",
        ]
        for r in rows:
            shares = " | ".join(f"{r['input_share'].get(s, float('nan')):.3f}" for s in STAGES)
            lines.append(
                f"| {Path(r['run']).name} | `{r['data']}` | {'yes' if r['stalled'] else 'no'}"
                f" | {100 * r['accuracy']:.2f} | {shares} | {r['rms'][STAGES[-1]]:.3f}"
                f" | {100 * r['active_fraction']:.1f} %"
                f" | {r['pooled_spread']:.3f} | {r['logit_std_over_images']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    i = sub.add_parser("init")
    i.add_argument("--depths", type=int, nargs="+", default=[20, 32, 56])
    e = sub.add_parser("escape")
    e.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    e.add_argument("--max-epochs", type=int, default=4)
    runpool.add_arguments(e)
    d = sub.add_parser("diagnose")
    d.add_argument("--runs", nargs="+", required=True, help="trained run folders (summary.json, model.pt)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.action == "init":
        initial_losses(args)
    elif args.action == "diagnose":
        diagnose(args)
    else:
        escape(args)


if __name__ == "__main__":
    main()
