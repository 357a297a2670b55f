"""Training throughput of sepconv's engine relative to a bare PyTorch loop (target ratio >= 0.9).

Both train ResNet-20 (batch 128, 32x32 random uint8 images in an ImageDataset, 10 classes) from the
same initial weights with the same SGD settings on the same batches (one BatchLoader each, same
seed). They alternate in chunks of ``--steps`` optimizer steps (A B, B A, A B, ...) so that the
shared machine's load changes hit both alike; each chunk of the engine is one ``Trainer.fit`` epoch,
so its per-epoch work (history record, metric reduction) is inside the timing. The ratio of the two
throughputs is reported per pair (median, quartiles) and over all pairs::

    nice -n 10 .venv/bin/python benchmarks/engine_overhead.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import sepconv
from sepconv.data.dataset import BatchLoader, ImageDataset
from sepconv.io import atomic_write_bytes
from sepconv.train.callbacks import Callback
from sepconv.train.engine import TrainConfig, Trainer

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
BATCH = 128


class StopEachEpoch(Callback):
    """Hands control back after every epoch, so that the bare loop can run its chunk in between."""

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        trainer.should_stop = True


def random_dataset(images: int, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(
        torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (images,), generator=g),
        [str(i) for i in range(10)],
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
        flip=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per chunk")
    parser.add_argument("--pairs", type=int, default=12, help="timed chunk pairs (after one warm-up pair)")
    parser.add_argument("--out", default=str(RESULTS / "engine_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = random_dataset(args.steps * BATCH)
    config = TrainConfig(
        epochs=args.pairs + 1,
        batch_size=BATCH,
        lr=0.05,
        nesterov=True,
        weight_decay=5e-4,
        schedule="constant",
    )
    torch.manual_seed(0)
    engine_model = sepconv.create_model("resnet20")
    bare_model = copy.deepcopy(engine_model)
    trainer = Trainer(engine_model, data, config=config, callbacks=[StopEachEpoch()], quiet=True)

    bare_opt = torch.optim.SGD(
        bare_model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    bare_loader = BatchLoader(
        data, batch_size=BATCH, train=True, seed=config.seed, padding=config.crop_padding
    )
    bare_epoch = 0

    def run_engine() -> float:
        start = time.perf_counter()
        trainer.fit()  # one epoch = args.steps steps
        return time.perf_counter() - start

    def run_bare() -> float:
        nonlocal bare_epoch
        bare_model.train()
        start = time.perf_counter()
        bare_loader.set_epoch(bare_epoch)
        for images, labels in bare_loader:
            loss = F.cross_entropy(bare_model(images), labels)
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            bare_opt.step()
        bare_epoch += 1
        return time.perf_counter() - start

    run_engine(), run_bare()  # warm-up: allocator, oneDNN primitive caches
    engine_s, bare_s = [], []
    for pair in range(args.pairs):
        if pair % 2 == 0:
            engine_s.append(run_engine())
            bare_s.append(run_bare())
        else:
            bare_s.append(run_bare())
            engine_s.append(run_engine())
        print(
            f"pair {pair + 1}/{args.pairs}: engine {engine_s[-1]:.2f} s, bare {bare_s[-1]:.2f} s", flush=True
        )

    # Same batches, same maths: the two models must still agree (the engine adds no hidden change).
    same = all(
        torch.equal(a, b)
        for a, b in zip(engine_model.state_dict().values(), bare_model.state_dict().values())
    )
    ratios = [b / e for e, b in zip(engine_s, bare_s)]  # throughput ratio engine / bare
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    images = args.steps * BATCH
    record = {
        "benchmark": "engine_overhead",
        "model": "resnet20 (CIFAR, 10 classes)",
        "batch_size": BATCH,
        "image_size": [3, 32, 32],
        "threads": args.threads,
        "steps_per_chunk": args.steps,
        "pairs": args.pairs,
        "ratio_median": median,
        "ratio_quartiles": [q1, q3],
        "ratio_total": sum(bare_s) / sum(engine_s),
        "target_ratio": 0.9,
        "engine_images_per_s_median": images / statistics.median(engine_s),
        "bare_images_per_s_median": images / statistics.median(bare_s),
        "weights_identical_after_training": same,
        "engine_seconds": engine_s,
        "bare_seconds": bare_s,
        "torch": torch.__version__,
    }
    text = json.dumps(record, indent=2)
    atomic_write_bytes(args.out, lambda f: f.write(text.encode()))
    print(
        f"engine/bare throughput ratio: median {median:.3f} (quartiles {q1:.3f}-{q3:.3f}), "
        f"total {record['ratio_total']:.3f}; weights identical: {same}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
