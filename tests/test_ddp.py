"""Data-parallel training: two processes under torchrun end with identical weights, equal to what
one process computes with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import sepconv
from sepconv.checkpoint import load_checkpoint

# Shared by the worker script (pasted into it) and by the single-process reference below.
COMMON = textwrap.dedent(
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sepconv.data.dataset import ImageDataset
    from sepconv.train.engine import TrainConfig


    def toy_dataset(n, seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 3
        images = (torch.rand(n, 2, 6, 6, generator=g) * 90 + labels.view(-1, 1, 1, 1) * 80).to(torch.uint8)
        return ImageDataset(images, labels, ["a", "b", "c"], (0.5, 0.5), (0.3, 0.3))


    class Tiny(nn.Module):
        # No BatchNorm: per-process batch statistics would make DDP differ from one big batch.
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 5, 3, padding=1)
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


    CONFIG = TrainConfig(epochs=2, batch_size=16, lr=0.2, nesterov=True, crop_padding=0, seed=3)
    """
)

WORKER = COMMON + textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import sepconv

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    trainer = sepconv.train(Tiny(), toy_dataset(64, 0), test_data=toy_dataset(21, 1), config=CONFIG,
                            out=out / "run", quiet=True)
    rank = int(os.environ["RANK"])
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"world": trainer.world_size, "history": trainer.history,
                                                      "steps": trainer.global_step}))
    """
)

namespace: dict = {}
exec(COMMON, namespace)  # the same definitions in this process, for the reference run


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2]
    # Replicas never drift apart: bitwise the same weights on both processes.
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])

    def metrics(history: list[dict]) -> list[dict]:  # timings are each process's own
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in history]

    assert metrics(infos[0]["history"]) == metrics(infos[1]["history"])
    assert infos[0]["steps"] == 2 * 4  # 64 images, global batch 16, 2 epochs

    # One process with the same global batch follows the same trajectory (up to float rounding),
    # since DDP averages the two half-batch gradients.
    torch.manual_seed(0)
    single = sepconv.train(
        namespace["Tiny"](),
        namespace["toy_dataset"](64, 0),
        test_data=namespace["toy_dataset"](21, 1),
        config=namespace["CONFIG"],
        quiet=True,
    )
    reference = single.model.state_dict()
    torch.manual_seed(0)
    initial = namespace["Tiny"]().state_dict()
    assert not torch.allclose(reference["fc.weight"], initial["fc.weight"], atol=1e-3)  # training did move
    for k in reference:
        torch.testing.assert_close(ranks[0][k], reference[k], atol=1e-5, rtol=1e-4)

    # Test metrics are summed over the two shards (11 + 10 images): exact for the whole set.
    model = namespace["Tiny"]()
    model.load_state_dict(ranks[0])
    whole = sepconv.evaluate(model, namespace["toy_dataset"](21, 1))
    assert infos[0]["history"][-1]["test_accuracy"] == whole["accuracy"]
    assert infos[0]["history"][-1]["test_loss"] == pytest.approx(whole["loss"], rel=1e-5)
    # Only rank 0 wrote the run folder, and its checkpoint holds the common weights.
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.equal(last["model"][k], ranks[0][k]) for k in ranks[0])
    assert last["epoch"] == 2
