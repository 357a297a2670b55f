"""Every command and every option, driven with bad values (issue 14): each must end in a non-zero
exit and exactly one line on stderr starting ``sepconv: error:``, without a traceback, within
seconds — before any slow step.

The options are read from the parser itself, so a new option fails
:func:`test_every_option_is_fuzzed` until it is given a kind here (or is declared in an
:class:`~sepconv.options.Options` class, whose own declaration then decides which generated values
are bad). Commands run in-process through :func:`sepconv.cli.main`; a few go through a real
subprocess at the end. Each command's base arguments are valid and point at tiny inputs, so a bad
value that slipped through would start real (small) work and fail the exit-code or time check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sepconv
from sepconv.cli import build_parser, main
from sepconv.cli.decompose import FINETUNE_DEFAULTS
from sepconv.convert.decompose import DecomposeOptions
from sepconv.deploy.onnx import ExportOptions
from sepconv.errors import SepconvError
from sepconv.methods import get_method, list_methods
from sepconv.options import describe, unwrap_optional
from sepconv.train.config import TrainConfig

from .test_cli_train import write_cifar_folder

# A bad value must be refused within this many seconds (in-process; the machine may be shared).
LIMIT_S = 8.0
HUGE_INT = str(10**30)
HUGE_FLOAT = "1e300"
NUMERIC_BAD = ["abc", "", "nan", "inf", "-inf", "-1", "0", "1.5", HUGE_INT, HUGE_FLOAT]


# --------------------------------------------------------------------------- the inputs


class Env:
    """Tiny valid inputs and a zoo of bad paths, made once for the module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = f"cifar10:{write_cifar_folder(root / 'cifar', classes=4, size=8, n_train=32, n_test=16)}"
        self.ckpt = root / "model.pt"
        sepconv.save_model(self.ckpt, sepconv.create_model("resnet20", num_classes=4))
        self.recipe = root / "recipe.yaml"
        self.recipe.write_text(
            f"model: resnet20\ndata: {self.data}\nsteps:\n  - train: {{epochs: 1, batch_size: 32}}\n"
        )
        self.study = root / "study"
        self.study.mkdir()
        (self.study / "study.json").write_text(
            json.dumps({"models": [{"name": "baseline", "accuracy": 0.5, "params": 10, "macs": 20}]})
        )
        self.text = root / "text.pt"
        self.text.write_text("hello\n")
        self.random = root / "random.pt"
        self.random.write_bytes(os.urandom(4096))
        self.empty = root / "empty.pt"
        self.empty.write_bytes(b"")
        self.folder = root / "an-empty-folder"
        self.folder.mkdir()
        self.blocker = root / "a-file"
        self.blocker.write_text("a file where a folder should be")
        self.under_file = self.blocker / "inside"
        self.missing = root / "missing.pt"
        self.not_utf8 = root / "latin1.yaml"
        self.not_utf8.write_bytes(b"model: resnet20\nname: caf\xe9\n")
        self.bad_yaml = root / "bad.yaml"
        self.bad_yaml.write_text("model: [resnet20\n")
        self.wrong_types = root / "types.yaml"
        self.wrong_types.write_text("model: resnet20\ntrain: {epochs: many}\n")
        self.counter = 0

    def out(self) -> str:
        """A fresh output path (folders of earlier runs must not make a later one pass)."""
        self.counter += 1
        return str(self.root / "out" / f"run{self.counter}")


def _paths(env: Env, *kinds: str) -> list[str]:
    table = {
        "missing": str(env.missing),
        "folder": str(env.folder),
        "text": str(env.text),
        "random": str(env.random),
        "empty": str(env.empty),
        "under-file": str(env.under_file / "x.pt"),
        "file": str(env.blocker),
        "blank": "",
    }
    return [table[k] for k in kinds]


# Bad values by kind, for the options written by hand (declared options derive theirs).
KINDS: dict[str, Callable[[Env], list[str]]] = {
    "count": lambda env: NUMERIC_BAD,  # an integer >= 1 with a finite bound
    "count0": lambda env: [v for v in NUMERIC_BAD if v != "0"],  # >= 0
    "fraction": lambda env: ["abc", "", "nan", "inf", "-inf", "-0.5", "1", "1.5", HUGE_INT, HUGE_FLOAT],  # [0, 1)
    "cpus": lambda env: [*NUMERIC_BAD, "100000"],  # threads, workers: at most the cores
    "seed": lambda env: ["abc", "", "-1", "1.5", "nan", HUGE_INT],
    "int-list": lambda env: ["", "x", "0", "-1", "1,,x", "nan", f"1,{HUGE_INT}", "100000000"],
    "size3": lambda env: ["", "3,32", "a,b,c", "0,32,32", "3,-1,32", "3,100000,32", "3,32,32,32", "nan,1,1"],
    "runtime": lambda env: ["", ",", "cuda", "torch,tpu"],
    "checkpoint": lambda env: _paths(env, "missing", "folder", "text", "random", "empty", "under-file", "blank"),
    "model": lambda env: ["zzz", "", *_paths(env, "missing", "folder", "text", "random", "empty")],
    "data": lambda env: [
        "zzz",
        "",
        "cifar10",
        f"cifar10:{env.missing}",
        f"cifar10:{env.folder}",
        f"cifar10:{env.text}",
        "colorchart:bogus",
        "colorchart:n=abc",
        "colorchart:size=100000",
        f"folder:{env.missing}",
        f"mnist:{env.folder}",
    ],
    "out-dir": lambda env: _paths(env, "file", "under-file", "blank"),
    "out-file": lambda env: [str(env.folder), str(env.under_file / "m.onnx"), ""],
    "recipe": lambda env: ["", "zzz", str(env.folder), str(env.not_utf8), str(env.bad_yaml), str(env.wrong_types)],
    "method": lambda env: ["zzz", ""],
    "set": lambda env: ["noequals", "=1", "bogus.key=1", "train.epochs=abc", "train.lr=nan", "seed=-1"],
    "pattern": lambda env: ["zzz*", "[*"],
    "method-name": lambda env: ["zzz", "soft_prunes"],
    "classes": lambda env: ["", "zzz", "0", "0,0", "0,zz", ","],
    "choice": lambda env: ["", "bogus"],
    "device": lambda env: ["", "tpu", "cuda:x", "gpu", "cuda:-1"],
    "studies": lambda env: _paths(env, "missing", "folder", "text"),
    "baseline": lambda env: ["zzz", ""],
    "layer": lambda env: ["zzz", ""],
    "indices": lambda env: ["", "x", "-1", "1,,x", "nan", "1.5", HUGE_INT, "100000000", ",".join(["0"] * 2000)],
    "plugin": lambda env: ["no_such_module_xyz", str(env.root / "missing.py"), str(env.text)],
}

# Hand-written options of each command: (command, option) -> kind. A positional is named by its
# dest. Declared options (Options fields) are found through their dest prefix instead.
OPTION_KINDS: dict[tuple[str, str], str] = {
    ("models", "pattern"): "pattern",
    ("methods", "name"): "method-name",
    ("profile", "model"): "model",
    ("profile", "--input-size"): "size3",
    ("profile", "--num-classes"): "count",
    ("profile", "--in-channels"): "count",
    ("data colorchart", "--out"): "out-dir",
    ("data colorchart", "--n"): "count",
    ("data colorchart", "--classes"): "classes",
    ("data colorchart", "--size"): "count",
    ("data colorchart", "--seed"): "seed",
    ("data colorchart", "--axis"): "choice",
    ("data colorchart", "--difficulty"): "choice",
    ("data colorchart", "--workers"): "cpus",
    ("data colorchart", "--render-scale"): "count",
    ("data colorchart", "--pool"): "count0",
    ("data colorchart", "--faint"): "fraction",
    ("data info", "spec"): "data",
    ("train", "--model"): "model",
    ("train", "--data"): "data",
    ("train", "--out"): "out-dir",
    ("train", "--resume"): "checkpoint",
    ("train", "--limit-train"): "count",
    ("train", "--limit-test"): "count",
    ("train", "--threads"): "cpus",
    ("evaluate", "checkpoint"): "checkpoint",
    ("evaluate", "--data"): "data",
    ("evaluate", "--batch-size"): "count",
    ("evaluate", "--limit"): "count",
    ("evaluate", "--threads"): "cpus",
    ("evaluate", "--device"): "device",
    ("compress", "--recipe"): "recipe",
    ("compress", "--method"): "method",
    ("compress", "--model"): "model",
    ("compress", "--data"): "data",
    ("compress", "--out"): "out-dir",
    ("compress", "--set"): "set",
    ("compress", "--threads"): "cpus",
    ("compress", "--stall-retries"): "count0",
    ("decompose", "checkpoint"): "checkpoint",
    ("decompose", "--data"): "data",
    ("decompose", "--out"): "out-dir",
    ("decompose", "--threads"): "cpus",
    ("decompose", "--device"): "device",
    ("demo", "--out"): "out-dir",
    ("demo", "--epochs"): "count",
    ("demo", "--data"): "data",
    ("demo", "--bench-repeats"): "count",
    ("export", "model"): "model",
    ("export", "--out"): "out-file",
    ("export", "--num-classes"): "count",
    ("export", "--in-channels"): "count",
    ("export", "--data"): "data",
    ("bench", "model"): "model",
    ("bench", "--vs"): "model",
    ("bench", "--batch"): "int-list",
    ("bench", "--runtime"): "runtime",
    ("bench", "--threads"): "cpus",
    ("bench", "--repeats"): "count",
    ("bench", "--warmup"): "count0",
    ("bench", "--input-size"): "size3",
    ("bench", "--num-classes"): "count",
    ("bench", "--in-channels"): "count",
    ("bench", "--device"): "device",
    ("bench", "--precision"): "choice",
    ("bench", "--blocks"): "count",
    ("report", "folders"): "studies",
    ("report", "--out"): "out-dir",
    ("report", "--baseline"): "baseline",
    ("report", "--batch"): "int-list",
    ("report", "--runtime"): "runtime",
    ("report", "--repeats"): "count",
    ("report", "--warmup"): "count0",
    ("report", "--threads"): "cpus",
    ("report", "--gradcam"): "data",
    ("report", "--gradcam-images"): "count",
    ("report", "--gradcam-layer"): "layer",
    ("gradcam", "checkpoint"): "checkpoint",
    ("gradcam", "--data"): "data",
    ("gradcam", "--layer"): "layer",
    ("gradcam", "--out"): "out-dir",
    ("gradcam", "--images"): "count",
    ("gradcam", "--indices"): "indices",
    ("gradcam", "--target"): "choice",
    ("gradcam", "--scale"): "count",
    ("gradcam", "--threads"): "cpus",
    ("", "--plugin"): "plugin",
}

# Declared options: dest prefix -> (Options class, the command's own settings the check runs with).
DECLARED: dict[str, tuple[type, dict[str, Any]]] = {
    "train__": (TrainConfig, {"epochs": 1, "batch_size": 32}),
    "export__": (ExportOptions, {"input_size": (3, 8, 8)}),
    "decompose__": (DecomposeOptions, {}),
    "finetune__": (TrainConfig, {**FINETUNE_DEFAULTS, "epochs": 1}),
}


def bases(env: Env) -> dict[str, list[str]]:
    """Valid arguments of every command, on tiny inputs (an accepted bad value would run them)."""
    return {
        "models": [],
        "methods": [],
        "profile": ["resnet20", "--input-size", "3,8,8"],
        "data colorchart": ["--out", env.out(), "--n", "20", "--classes", "0,1", "--size", "8", "--pool", "1",
                            "--render-scale", "1", "--workers", "1"],
        "data list": [],
        "data info": [env.data],
        "train": ["--model", "resnet20", "--data", env.data, "--out", env.out(), "--epochs", "1", "--batch-size",
                  "32", "--threads", "1", "--quiet"],
        "evaluate": [str(env.ckpt), "--data", env.data, "--threads", "1"],
        "compress": ["--recipe", str(env.recipe), "--out", env.out(), "--threads", "1", "--quiet"],
        "decompose": [str(env.ckpt), "--data", env.data, "--out", env.out(), "--threads", "1", "--images", "8",
                      "--positions", "2", "--layers", "layer3.2.*", "--finetune-epochs", "1"],
        "demo": ["--out", env.out(), "--epochs", "1", "--data", env.data, "--bench-repeats", "1", "--quiet"],
        "export": ["resnet20", "--out", str(Path(env.out()) / "m.onnx"), "--input-size", "3,8,8"],
        "bench": ["resnet20", "--batch", "1", "--repeats", "1", "--warmup", "0", "--runtime", "torch",
                  "--threads", "1", "--input-size", "3,8,8"],
        "report": [str(env.study), "--out", env.out()],
        "gradcam": [str(env.ckpt), "--data", env.data, "--out", env.out(), "--images", "2", "--threads", "1"],
    }  # fmt: skip


# --------------------------------------------------------------------------- the parser's options


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                nested = _commands(sub, full)
                found.update(nested or {full: sub})
    return found


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions that take a value (flags without one cannot be given a bad value)."""
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction, argparse.BooleanOptionalAction)
    return [a for a in parser._actions if not isinstance(a, skip) and not isinstance(a, argparse._SubParsersAction)]


def _name(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def _declared(action: argparse.Action) -> tuple[type, str, dict[str, Any]] | None:
    for prefix, (cls, context) in DECLARED.items():
        if action.dest.startswith(prefix):
            return cls, action.dest[len(prefix) :], context
    return None


def _refused(cls: type, name: str, value: str, context: dict[str, Any]) -> bool:
    """Whether the declaration itself refuses ``value`` for option ``name`` (the oracle)."""
    if cls is TrainConfig and name == "epochs" and context is DECLARED["finetune__"][1]:
        try:  # --finetune-epochs: 0 means no fine-tuning
            return int(value) < 0 or int(value) > 100_000
        except ValueError:
            return True
    try:
        cls.from_dict({**context, name: value})
    except SepconvError:
        return True
    return False


def _declared_candidates(cls: type, name: str) -> list[str]:
    info = next(i for i in describe(cls) if i.name == name)
    kind, _ = unwrap_optional(info.kind)
    if kind in (int, float):
        return NUMERIC_BAD
    if get_origin(kind) in (tuple, list) and get_args(kind)[0] in (int, float):
        return [*NUMERIC_BAD, "1,x", f"1,{HUGE_INT}", "1,-1"]
    if get_origin(kind) is Literal or info.choices:
        return ["", "bogus"]
    return ["", "*", "zzz", HUGE_INT]


def cases(env: Env) -> dict[str, list[tuple[str, str]]]:
    """(option, bad value) pairs of every command."""
    parser = build_parser()
    found: dict[str, list[tuple[str, str]]] = {}
    for command, sub in _commands(parser).items():
        pairs = []
        for action in _options(sub):
            declared = _declared(action)
            if declared is not None:
                cls, name, context = declared
                pairs += [(_name(action), v) for v in _declared_candidates(cls, name) if _refused(cls, name, v, context)]
            else:
                kind = OPTION_KINDS.get((command, _name(action)))
                if kind is not None:
                    pairs += [(_name(action), v) for v in KINDS[kind](env)]
        found[command] = pairs
    for command in ("models", "data list"):  # --plugin belongs to every command; tried on two
        found[command] += [("--plugin", v) for v in KINDS["plugin"](env)]
    return found


def argv(env: Env, command: str, option: str, value: str) -> list[str]:
    """The command's base arguments with ``option`` set to ``value`` (a positional replaced)."""
    base = bases(env)[command]
    words = command.split()
    if option == "--plugin":
        return ["--plugin", value, *words, *base]
    if not option.startswith("--"):  # the positional: first in the base arguments, if there
        rest = base[1:] if base and not base[0].startswith("--") else base
        return [*words, value, *rest]
    if option in base:
        k = base.index(option)
        return [*words, *base[:k], f"{option}={value}", *base[k + 2 :]]
    return [*words, *base, f"{option}={value}"]


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    return Env(tmp_path_factory.mktemp("fuzz"))


COMMANDS = sorted(_commands(build_parser()))


def test_every_option_is_fuzzed() -> None:
    missing = []
    for command, sub in _commands(build_parser()).items():
        for action in _options(sub):
            if _declared(action) is None and (command, _name(action)) not in OPTION_KINDS:
                missing.append(f"{command} {_name(action)}")
    assert not missing, f"give these options a kind in OPTION_KINDS: {missing}"


def _loose_numbers(cls: type, context: dict[str, Any], prefix: str) -> list[str]:
    """``prefix + name=value`` for each NaN, infinity or huge value a numeric CLI setting of
    ``cls`` accepts."""
    loose = []
    for info in describe(cls):
        kind, _ = unwrap_optional(info.kind)
        if kind in (int, float) and info.cli:
            for value in ("nan", "inf", HUGE_INT, HUGE_FLOAT):
                if not _refused(cls, info.name, value, context):
                    loose.append(f"{prefix}{info.name}={value}")
    return loose


def test_every_declared_number_has_finite_bounds() -> None:
    """NaN, infinities and huge values are refused by every numeric setting a flag can reach."""
    loose = []
    for prefix, (cls, context) in DECLARED.items():
        loose += _loose_numbers(cls, context, prefix)
    assert not loose, f"accepted: {loose}"


def test_every_method_option_number_has_finite_bounds() -> None:
    """The same for every built-in method's options (flags of ``compress --method NAME``, which
    the base arguments above, a recipe, do not reach); toy methods other tests register are not ours."""
    loose = []
    for name in list_methods():
        method = get_method(name)
        if not method.__module__.startswith("sepconv.methods."):
            continue
        loose += _loose_numbers(method.options_class, {}, f"{name}.")
    assert not loose, f"accepted: {loose}"


def test_the_base_arguments_of_the_quick_commands_run(env: Env, capfd) -> None:
    """The fuzz cases differ from these in one value: they must be valid, or the test proves nothing."""
    for command in ("models", "methods", "profile", "data list", "data info", "evaluate", "export", "report", "gradcam"):
        assert main([*command.split(), *bases(env)[command]]) == 0, (command, capfd.readouterr().err)
    capfd.readouterr()


def _check(env: Env, capfd, command: str, option: str, value: str) -> None:
    args = argv(env, command, option, value)
    capfd.readouterr()
    started = time.perf_counter()
    try:
        code = main(args)
    finally:
        torch.set_num_threads(1)  # --threads must not leak into the next case
    elapsed = time.perf_counter() - started
    err = capfd.readouterr().err.strip()
    where = f"sepconv {' '.join(map(repr, args))}"
    assert code != 0, f"{where} was accepted"
    assert "Traceback" not in err, f"{where}: {err}"
    assert len(err.splitlines()) == 1 and err.startswith("sepconv: error:"), f"{where}: {err!r}"
    assert elapsed < LIMIT_S, f"{where} took {elapsed:.1f} s"


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_values_give_one_line_errors(command: str, env: Env, capfd) -> None:
    """Every listed bad value of every option once, then hypothesis' random numbers."""
    pairs = cases(env)[command]
    assert pairs, command
    for option, value in pairs:
        _check(env, capfd, command, option, value)
    random = _random_numbers(pairs)
    if random.is_empty:
        return

    @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(random)
    def random_value(case: tuple[str, str]) -> None:
        _check(env, capfd, command, *case)

    random_value()


def _random_numbers(pairs: list[tuple[str, str]]) -> st.SearchStrategy[tuple[str, str]]:
    """Beyond the fixed candidates: random negative or huge numbers for the count-like options,
    whose every declaration must refuse them."""
    counts = sorted({o for o, v in pairs if v == "-1"} & {o for o, v in pairs if v == HUGE_INT})
    if not counts:
        return st.nothing()
    number = st.one_of(  # below every lower bound, or above every upper one (seeds go to 2**63)
        st.integers(max_value=-1).map(str),
        st.integers(min_value=2**64).map(str),
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x) or x > 2**64).map(repr),
    )
    return st.tuples(st.sampled_from(counts), number)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sepconv.cli", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def test_a_few_cases_in_a_real_process(env: Env) -> None:
    """The same contract seen from outside: exit status and the whole of stderr."""
    for args in (
        ["profile", str(env.text)],
        ["compress", "--recipe", str(env.not_utf8), "--out", env.out()],
        ["data", "colorchart", "--out", env.out(), "--workers", "100000"],
        ["train", "--bogus"],
    ):
        started = time.perf_counter()
        proc = _cli(*args)
        err = proc.stderr.strip()
        assert proc.returncode != 0 and "Traceback" not in err, (args, err)
        assert len(err.splitlines()) == 1 and err.startswith("sepconv: error:"), (args, err)
        assert time.perf_counter() - started < 60, args
