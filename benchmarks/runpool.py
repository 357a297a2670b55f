"""Many training runs of one benchmark: one at a time on the CPU, or several at once sharing a GPU.

A benchmark that trains many runs (``seed000_tables.py``, ``colorchart_calibration.py``,
``decompose_budget.py``) describes each run as a picklable job, trains it into its own folder and
assembles its tables from the folders: a finished run has its ``summary.json``, so runs can go in
any order, in several processes, and an interrupted benchmark resumes where it stopped.

Options every such benchmark takes (:func:`add_arguments`):

* ``--device cuda`` — passed to every run's train step as ``TrainConfig.device`` (the GPU-training
  work adds that field; on a checkout without it only ``cpu`` is accepted);
* ``--train-option KEY=VALUE`` (repeatable) — any other ``TrainConfig`` field for every run, e.g.
  ``amp=true``;
* ``--jobs N`` — N worker processes (spawned, each training one run at a time; on one GPU, 8
  processes of ResNet-20 train about 4x faster in all than one, see the project's performance
  facts); 1 trains in this process;
* ``--threads T`` — torch intra-op threads per process (1 on the shared CPU machine).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Job = TypeVar("Job")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the runs train")
    group.add_argument("--device", default="cpu", help="TrainConfig.device of every run (cpu, cuda, cuda:1)")
    group.add_argument(
        "--train-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig field for every run (repeatable), e.g. amp=true",
    )
    group.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each")
    group.add_argument("--threads", type=int, default=1, help="torch threads per process")


def add_curriculum_arguments(parser: argparse.ArgumentParser, spec: str | None, epochs: int) -> None:
    """``--curriculum SPEC`` / ``--curriculum-epochs N`` (TrainConfig.curriculum), read back by
    :func:`curriculum_settings`; ``--curriculum none`` or N = 0 trains without one."""
    parser.add_argument("--curriculum", default=spec, help="data spec of the curriculum epochs ('none': none)")
    parser.add_argument("--curriculum-epochs", type=int, default=epochs)


def curriculum_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields of :func:`add_curriculum_arguments` (empty: no curriculum)."""
    if args.curriculum in (None, "none") or args.curriculum_epochs == 0:
        return {}
    return {"curriculum": args.curriculum, "curriculum_epochs": args.curriculum_epochs}


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields ``--device`` and ``--train-option`` set, checked against this
    checkout's TrainConfig (so a typo fails before any run starts)."""
    from sepconv.train.config import TrainConfig

    known = set(TrainConfig().to_dict())
    settings: dict[str, Any] = {}
    if args.device != "cpu":
        settings["device"] = args.device
    for item in args.train_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--train-option {item!r}: use KEY=VALUE")
        settings[key.strip()] = value.strip()
    unknown = sorted(set(settings) - known)
    if unknown:
        raise SystemExit(
            f"this checkout's TrainConfig has no field {', '.join(unknown)}"
            " (--device needs the GPU-training work merged); fields: " + ", ".join(sorted(known))
        )
    TrainConfig.from_dict({**TrainConfig().to_dict(), **settings})  # values checked now, once
    return settings


def _init_worker(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _call(work: Callable[[Any], Any], job: Any) -> tuple[bool, Any]:
    # A run that fails is a result (its error is recorded), not the end of the other runs.
    try:
        return True, work(job)
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"


def run_jobs(
    jobs: Sequence[Job],
    work: Callable[[Job], Any],
    n_jobs: int = 1,
    threads: int = 1,
    on_done: Callable[[Job, bool, Any], None] | None = None,
) -> list[tuple[Job, bool, Any]]:
    """Run ``work(job)`` for every job, ``n_jobs`` at a time; ``on_done(job, ok, result_or_error)``
    is called in this process as each one finishes (the benchmarks rebuild their tables there).
    ``work`` must be a module-level function of an importable module (worker processes are spawned:
    CUDA does not survive a fork)."""
    results: list[tuple[Job, bool, Any]] = []

    def done(job: Job, ok: bool, value: Any) -> None:
        results.append((job, ok, value))
        if not ok:
            print(f"run {job} failed: {value}", flush=True)
        if on_done is not None:
            on_done(job, ok, value)

    if n_jobs <= 1:
        _init_worker(threads)
        for job in jobs:
            done(job, *_call(work, job))
        return results
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=n_jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(_call, work, job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            done(futures[future], *future.result())
    return results


# ---- training budgets ------------------------------------------------------------------------


def paper_milestones(epochs: int) -> list[int]:
    """The authors' step epochs 60/120/160 of 200, scaled to ``epochs`` (strictly increasing)."""
    marks: list[int] = []
    for fraction in (0.3, 0.6, 0.8):
        mark = max(1, round(fraction * epochs), (marks[-1] + 1) if marks else 1)
        if mark < epochs:
            marks.append(mark)
    return marks


def schedule_settings(schedule: str, epochs: int, warmup: float) -> dict[str, Any]:
    """``train.*`` settings of a named schedule at ``epochs``:

    * ``recipe`` — the built-in recipes' schedule: batch 32, lr 0.05 cosine per step, Nesterov;
    * ``paper`` — the authors' CIFAR schedule (spec 02 §7): batch 128, lr 0.1, ×0.2 at 30/60/80 %
      of the epochs (60/120/160 of 200), Nesterov.

    Both: momentum 0.9, weight decay 5e-4, crop padding 4 (no flips on the charts), ``warmup``
    epochs of linear warm-up."""
    common = {
        "epochs": epochs,
        "warmup_epochs": warmup,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
    }
    if schedule == "recipe":
        return {**common, "batch_size": 32, "lr": 0.05, "schedule": "cosine"}
    if schedule == "paper":
        return {
            **common,
            "batch_size": 128,
            "lr": 0.1,
            "schedule": "multistep",
            "milestones": paper_milestones(epochs),
            "gamma": 0.2,
        }
    raise SystemExit(f"unknown schedule {schedule!r}: recipe or paper")


def recipe_settings(train: dict[str, Any], seed: int) -> dict[str, Any]:
    """``Recipe.with_settings`` keys: the run's seed (the recipe's and its train step's: a train
    step keeps the seed it was loaded with) and every ``train.*`` setting."""
    return {"seed": seed, "train.seed": seed, **{f"train.{k}": v for k, v in train.items()}}
