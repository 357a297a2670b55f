"""``sepconv decompose``: turn the trained regular convs of a model into depthwise-separable (or
channel-decomposed) ones post-training ([He23], [Zhang16]), optionally fine-tune, and save.

Writes ``OUT/model.pt`` (the final model: fine-tuned if ``--finetune-epochs`` > 0, in which case the
model straight after decomposition is ``OUT/decomposed.pt`` and the training run ``OUT/finetune/``)
and ``OUT/decompose.json`` (the per-layer report). The decomposition's flags are the ``decompose``
method's options, the fine-tuning's the training settings, each prefixed ``--finetune-``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..checkpoint import is_checkpoint_path, load_model, save_model
from ..convert.decompose import DecomposeOptions
from ..data.registry import check_spec, get_dataset
from ..devices import resolve_device
from ..errors import SepconvError
from ..io import atomic_write_text, check_writable_dir, clean_stale_temporaries, ensure_writable_dir
from ..methods.base import StepContext
from ..methods.decompose import Decompose
from ..models.arch import model_stats, set_normalization
from ..normalization import Normalization
from ..options import describe
from ..threads import set_torch_threads
from ..train.api import train
from ..train.config import TrainConfig
from ..train.evaluation import check_model_fits_data
from .flags import add_option_flags, given_options

_DEST = "decompose__"
_FINETUNE_DEST = "finetune__"
# Fine-tuning a decomposition: a small constant learning rate and frozen BatchNorm (docs/DESIGN.md).
FINETUNE_DEFAULTS = {"epochs": 0, "lr": 1e-4, "schedule": "constant", "bn_frozen": True}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decompose", help="decompose trained convs into depthwise-separable ones")
    p.add_argument("checkpoint", help="trained checkpoint (or a zoo name, for fresh weights)")
    p.add_argument("--data", required=True, help="data set spec whose training images are sampled")
    p.add_argument("--out", required=True, help="output folder: model.pt, decompose.json")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument(
        "--device",
        default="auto",
        help="where the networks run and the statistics are gathered, and fine-tuning trains: "
        "auto (CUDA when available; default), cpu, cuda or cuda:N",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_option_flags(p.add_argument_group("decomposition"), DecomposeOptions, _DEST)
    finetune = p.add_argument_group("fine-tuning (after decomposition; --finetune-epochs 0 = none)")
    add_option_flags(
        finetune,
        TrainConfig,
        _FINETUNE_DEST,
        defaults=FINETUNE_DEFAULTS,
        names={i.name: f"--finetune-{i.name.replace('_', '-')}" for i in describe(TrainConfig)},
        skip=("device",),  # --device serves both
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = DecomposeOptions.from_dict(given_options(args, _DEST), "decompose")
    finetune = _finetune_config(given_options(args, _FINETUNE_DEST))  # checked before any work
    device = resolve_device(args.device)
    if finetune is not None:
        finetune = finetune.replace(device=args.device)
    set_torch_threads(args.threads)
    check_spec(args.data)
    out = check_writable_dir(args.out)  # created once the checkpoint and data have loaded
    clean_stale_temporaries(out)
    # A checkpoint is read (and a bad one refused) before the data set, which may take minutes.
    model = load_model(args.checkpoint) if is_checkpoint_path(args.checkpoint) else None
    stats = model_stats(model) if model is not None else None  # sample as the model was trained
    data = get_dataset(args.data, train=True, stats=stats)
    if model is None:
        model = load_model(args.checkpoint, num_classes=data.num_classes, in_channels=data.in_channels)
    check_model_fits_data(model, data, args.checkpoint)
    if stats is None:  # fresh weights, or a checkpoint from before normalisations were recorded
        stats = (tuple(data.mean), tuple(data.std))
        set_normalization(model, Normalization(*stats))
    model.to(device)
    ensure_writable_dir(out)

    ctx = StepContext(
        out,
        lambda train_split: data if train_split else get_dataset(args.data, train=False, stats=stats),
        quiet=args.json,
    )
    decomposed, report = Decompose(options).apply(model, ctx)
    summary: dict[str, Any] = report.to_dict()
    if finetune is not None:
        save_model(out / "decomposed.pt", decomposed, decompose=summary)
        trainer = train(decomposed, args.data, out=out / "finetune", config=finetune, quiet=True)
        decomposed = trainer.model
        last = trainer.history[-1] if trainer.history else {}
        summary["finetune"] = {
            **finetune.to_dict(),
            "test_accuracy": last.get("test_accuracy"),
            "test_loss": last.get("test_loss"),
        }
    save_model(out / "model.pt", decomposed, decompose=summary)
    atomic_write_text(out / "decompose.json", json.dumps(summary, indent=2) + "\n")

    if args.json:
        print(json.dumps(summary))
        return 0
    print(report.table())
    print(report.summary())
    tuned = summary.get("finetune")
    if tuned and tuned["test_accuracy"] is not None:
        print(
            f"fine-tuned {tuned['epochs']} epoch(s) at lr {tuned['lr']:g}: "
            f"test accuracy {100 * float(tuned['test_accuracy']):.2f}%"
        )
    print(f"wrote {Path(out) / 'model.pt'}")
    return 0


def _finetune_config(given: dict[str, Any]) -> TrainConfig | None:
    settings = {**FINETUNE_DEFAULTS, **given}
    raw_epochs = settings.pop("epochs")
    try:
        n = int(raw_epochs)
    except (TypeError, ValueError):
        raise SepconvError(f"--finetune-epochs must be an integer, got {raw_epochs!r}") from None
    if n < 0:
        raise SepconvError(f"--finetune-epochs must not be negative, got {n}")
    if n == 0:
        if given.keys() - {"epochs"}:
            raise SepconvError("fine-tuning options given without --finetune-epochs")
        return None
    return TrainConfig.from_dict({**settings, "epochs": n}, "fine-tuning")
