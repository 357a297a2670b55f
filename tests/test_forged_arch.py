"""Forged architecture descriptions (issue 14, item 2): a description is data from a file, so wrong
types, out-of-range or huge sizes, unknown transformations and keywords must each be refused in
one line, within a second, before the model is allocated — straight from a dict and through a
checkpoint file.
"""

from __future__ import annotations

import copy
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import sepconv
from sepconv.checkpoint import model_payload, save_checkpoint
from sepconv.cli import main
from sepconv.errors import SepconvError
from sepconv.measure.memory import forward_memory
from sepconv.models import guard
from sepconv.models.arch import Architecture, get_arch
from sepconv.models.guard import BuildGuard, guarded_build
from sepconv.models.registry import build_from_arch, config_schema, create_model, model_entry

X = torch.zeros(2, 3, 16, 16)


def _descriptions() -> dict[str, dict[str, Any]]:
    base = sepconv.create_model("resnet20")
    dsc, _ = sepconv.to_separable(base)
    groups = sepconv.dependency_groups(dsc, X)
    small, _ = sepconv.compact(dsc, {g.id: [0] for g in groups if g.prunable}, X)
    return {
        name: get_arch(model).to_dict()
        for name, model in {
            "resnet20": base,
            "resnet20_dsc": dsc,
            "compacted": small,
            "mobilenet_v2": sepconv.create_model("mobilenet_v2"),
            "densenet": sepconv.create_model("densenet_bc_100"),
        }.items()
    }


def _config(key: str, value: Any) -> Callable[[dict], None]:
    return lambda a: a["config"].__setitem__(key, value)


def _step(k: int, key: str, value: Any) -> Callable[[dict], None]:
    return lambda a: a["transforms"][k]["kwargs"].__setitem__(key, value)


def _decompose(layer: dict) -> Callable[[dict], None]:
    return lambda a: a.__setitem__("transforms", [{"name": "decompose", "kwargs": {"layers": [layer]}}])


LAYER = {"name": "layer3.0.conv1", "kind": "depthwise", "width": 1, "bias": False}
# (name, which description, forgery, a word the message must hold)
FORGERIES = [
    ("width 1e9", "resnet20", _config("base_width", 10**9), "base_width"),
    ("width 1e5", "resnet20", _config("base_width", 10**5), "memory"),
    ("width -4", "resnet20", _config("base_width", -4), "negative"),
    ("width 16.5", "resnet20", _config("base_width", 16.5), "integer"),
    ("width true", "resnet20", _config("base_width", True), "integer"),
    ("width nested", "resnet20", _config("base_width", {"a": [1]}), "integer"),
    ("width nan", "resnet20", _config("base_width", float("nan")), "non-finite"),
    ("classes 'ten'", "resnet20", _config("num_classes", "ten"), "num_classes"),
    ("classes 1e9", "resnet20", _config("num_classes", 10**9), "num_classes"),
    ("channels 1e9", "resnet20", _config("in_channels", 10**9), "in_channels"),
    ("unknown config key", "resnet20", _config("bogus", 1), "no option"),
    ("config a list", "resnet20", lambda a: a.__setitem__("config", [1]), "mapping"),
    ("name unknown", "resnet20", lambda a: a.__setitem__("name", "zzz"), "unknown model"),
    ("name a number", "resnet20", lambda a: a.__setitem__("name", 5), "name"),
    ("version 99", "resnet20", lambda a: a.__setitem__("version", 99), "newer sepconv"),
    ("unknown top key", "resnet20", lambda a: a.__setitem__("surprise", 1), "unknown key"),
    ("transform a string", "resnet20_dsc", lambda a: a.__setitem__("transforms", ["to_separable"]), "mapping"),
    ("kwargs a list", "resnet20_dsc", lambda a: a["transforms"][0].__setitem__("kwargs", [1, 2]), "mapping"),
    ("unknown keyword", "resnet20_dsc", _step(0, "bogus", 1), "unknown option"),
    ("unknown transform", "resnet20_dsc", lambda a: a["transforms"][0].__setitem__("name", "bogus"), "unknown"),
    ("multiplier 1e6", "resnet20_dsc", _step(0, "multiplier", 10**6), "multiplier"),
    ("multiplier 'x'", "resnet20_dsc", _step(0, "multiplier", "x"), "multiplier"),
    ("include 5", "resnet20_dsc", _step(0, "include", 5), "include"),
    ("mid_act bogus", "resnet20_dsc", _step(0, "mid_act", "bogus"), "mid_act"),
    ("too many transforms", "resnet20_dsc", lambda a: a.__setitem__("transforms", a["transforms"] * 1000), "at most"),
    ("compaction 100000²", "compacted", _step(1, "input_size", [3, 100000, 100000]), "input_size"),
    ("compaction 4000²", "compacted", _step(1, "input_size", [3, 4000, 4000]), "memory"),
    ("compaction size text", "compacted", _step(1, "input_size", "3x32"), "input_size"),
    ("kept filters text", "compacted", _step(1, "kept_filters", "abc"), "kept_filters"),
    ("kept filters items", "compacted", _step(1, "kept_filters", {"conv1.pointwise": ["a"]}), "integer"),
    ("kept filters negative", "compacted", _step(1, "kept_filters", {"conv1.pointwise": [-1]}), ">= 0"),
    ("kept filters layer", "compacted", _step(1, "kept_filters", {"nope": [0]}), "nope"),
    ("width_mult 1e6", "mobilenet_v2", _config("width_mult", 1e6), "memory"),
    ("width_mult 1e3", "mobilenet_v2", _config("width_mult", 1e3), "memory"),
    ("width_mult 'big'", "mobilenet_v2", _config("width_mult", "big"), "number"),
    ("depth 1e6", "densenet", _config("depth", 10**6), "depth"),
    ("depth 'deep'", "densenet", _config("depth", "deep"), "depth"),
    ("growth 1e9", "densenet", _config("growth_rate", 10**9), "growth_rate"),
    ("growth 1e5", "densenet", _config("growth_rate", 10**5), "memory"),
    ("decomposed width 1e9", "resnet20", _decompose({**LAYER, "width": 10**9}), "width"),
    ("decomposed width 1e5", "resnet20", _decompose({**LAYER, "width": 10**5}), "width"),
    ("decomposed kind missing", "resnet20", _decompose({"name": "layer3.0.conv1"}), "missing option"),
    ("decomposed layers text", "resnet20", lambda a: _decompose("conv1")(a), "mapping"),
    ("decomposed layer unknown", "resnet20", _decompose({**LAYER, "name": "nope"}), "nope"),
    ("fold pair incomplete", "resnet20_dsc",
     lambda a: a["transforms"].append({"name": "fold_separable", "kwargs": {"pairs": [{"dw": "conv1"}]}}), "pw"),
    ("fold pair of linears", "resnet20_dsc",
     lambda a: a["transforms"].append(
         {"name": "fold_separable", "kwargs": {"pairs": [{"dw": "fc", "pw": "fc", "bias": True}]}}), "not both convs"),
    ("fold_batchnorm keyword", "resnet20_dsc",
     lambda a: a["transforms"].append({"name": "fold_batchnorm", "kwargs": {"x": 1}}), "unknown option"),
    ("normalisation negative std", "resnet20",
     lambda a: a.__setitem__("normalization", {"mean": [0.5] * 3, "std": [-1.0] * 3}), "positive"),
]  # fmt: skip


@pytest.fixture(scope="module")
def descriptions() -> dict[str, dict[str, Any]]:
    found = _descriptions()
    forward_memory(create_model("resnet20"), (3, 8, 8))  # the meta kernels' one-time start in this process
    return found


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


@pytest.mark.parametrize("name,which,forge,needle", FORGERIES, ids=[f[0] for f in FORGERIES])
def test_a_forged_description_is_refused_fast_without_allocating(name, which, forge, needle, descriptions) -> None:
    forged = copy.deepcopy(descriptions[which])
    forge(forged)
    before = _peak_rss()
    started = time.perf_counter()
    with pytest.raises(SepconvError) as info:
        build_from_arch(forged)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert "\n" not in message and needle in message, message
    assert elapsed < 1.0, f"{name}: {elapsed:.2f} s"
    assert _peak_rss() - before < 300e6, f"{name}: the process grew by {(_peak_rss() - before) / 1e6:.0f} MB"


def test_the_same_through_a_checkpoint_and_the_command_line(descriptions, tmp_path: Path, capfd) -> None:
    forged = copy.deepcopy(descriptions["mobilenet_v2"])
    forged["config"]["width_mult"] = 1e6
    payload = model_payload(sepconv.create_model("mobilenet_v2"))
    save_checkpoint(tmp_path / "forged.pt", {**payload, "arch": forged})
    assert main(["profile", str(tmp_path / "forged.pt")]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("sepconv: error:") and "needs at least" in err and len(err.splitlines()) == 1


def test_every_description_of_the_zoo_still_builds(descriptions) -> None:
    for which, data in descriptions.items():
        assert Architecture.from_dict(build_from_arch(data).sepconv_arch.to_dict()) == Architecture.from_dict(data), which


def test_the_schema_comes_from_each_builder() -> None:
    schema = config_schema("densenet_bc_100")
    assert schema["depth"].default == 100 and schema["compression"].kind is float
    assert config_schema("mobilenet_v2_folded")["width_mult"].kind is float  # a derived variant: its base's
    with pytest.raises(SepconvError, match="must be <= 1000"):
        create_model("densenet_bc_100", depth=10**6)


def test_the_guard_refuses_before_allocating_and_builds_as_without_it(monkeypatch) -> None:
    with pytest.raises(SepconvError, match="needs at least"), BuildGuard("a test", budget=1 << 20):
        torch.nn.Linear(1024, 1024)  # 4 MB of weights against a 1 MB budget
    with pytest.raises(SepconvError, match="more than 10 layers"), BuildGuard("a test", max_modules=10):
        torch.nn.Sequential(*[torch.nn.ReLU() for _ in range(11)])
    # A build with tensors over the deferral size is sized on "meta" first, then rebuilt for real
    # from the same random state: the weights are those of an unguarded build.
    monkeypatch.setattr(guard, "DEFER_BYTES", 1 << 14)  # ResNet-20's 64x64 convs are 147 kB
    with BuildGuard("a test", defer=True) as sized:
        model_entry("resnet20").builder(num_classes=10, in_channels=3)
    assert sized.deferred  # so the comparison below exercises the second pass
    torch.manual_seed(3)
    plain = model_entry("resnet20").builder(num_classes=10, in_channels=3)
    torch.manual_seed(3)
    guarded = guarded_build("resnet20", model_entry("resnet20").builder, num_classes=10, in_channels=3)
    assert torch.randn(1).item() == _after_seed(3)  # the random stream moved as much as unguarded
    for (name, a), (_, b) in zip(plain.state_dict().items(), guarded.state_dict().items(), strict=True):
        assert b.device.type == "cpu" and torch.equal(a, b), name


def _after_seed(seed: int) -> float:
    """The next random number after seeding and one unguarded ResNet-20 build."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model_entry("resnet20").builder(num_classes=10, in_channels=3)
    value = torch.randn(1).item()
    torch.random.set_rng_state(state)
    return value
