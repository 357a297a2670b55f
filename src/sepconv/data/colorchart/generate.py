"""Writing a colour-chart data set: the plates of every split, in the CIFAR-10 python layout.

Spec spec 01 (colour-chart data set) §7, with the issue's changes:

* the size is given as a total ``n`` (default 7,000), split into 10 batches of ``n/10`` plates
  (``data_batch_1..7`` train, ``test_batch_1..3`` test), each with ``n/(10·k)`` plates of each of
  the ``k`` classes, so ``n`` must be a multiple of ``10·k``;
* classes are a preset (``mixed10`` = the spec's ten, ``digits``, ``letters``) or a user list;
* ``preview.png`` (a labelled grid of test plates, upscaled) is written next to the batches.

Per class, sample indices ``0 … 0.7·n/k − 1`` are training plates and the rest test plates; train
batch b holds indices ``m(b−1) … mb−1`` of every class (m = plates per class per batch), test batch
b those from ``7m + m(b−1)``, and each batch is shuffled by ``default_rng([seed, 1000 + b])``
(test: ``2000 + b``). Every file is written atomically, and the same arguments give byte-identical
files whatever the number of worker processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ...errors import SepconvError, did_you_mean
from ...io import atomic_write_bytes, clean_stale_temporaries
from ...resources import check_cpus, check_memory
from ..cifar import read_pickle  # the safe unpickler: a folder's meta must not run code
from .colour import AXES
from .glyphs import CLASS_PRESETS, GLYPHS
from .packing import DotLayout, pack_pool_layout
from .plate import (
    AXIS_CHOICES,
    DIFFICULTIES,
    PAPER,
    PlateDebug,
    PlateStyle,
    canonical_difficulty,
    check_faint,
    render_plate,
)

LEGACY_DIFFICULTIES = ("standard", "hard")  # keyed by name, as before the continuous scale

GENERATOR_VERSION = "sepconv-colorchart-2"  # change whenever the same arguments would give other plates
TRAIN_BATCHES = 7
TEST_BATCHES = 3
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 128  # plates are rendered at size × render_scale; beyond this it is only slow
MAX_PLATES = 10_000_000  # 30 GB of 32×32 plates; the memory check below usually says no earlier
MAX_POOL = 100_000
MAX_SEED = 2**63 - 1
PREVIEW_COLUMNS = 8
META_FILE = "batches.meta"
PREVIEW_FILE = "preview.png"


def parse_classes(text: str) -> tuple[str, ...]:
    """A class preset name, or a comma-separated list of glyph names (``0,1,7,A``, ``cat,fish``)."""
    text = str(text).strip()
    if text in CLASS_PRESETS:
        return CLASS_PRESETS[text]
    known = ", ".join(CLASS_PRESETS)
    if "," not in text and text not in GLYPHS and text.upper() not in GLYPHS:
        raise SepconvError(
            f"unknown class preset {text!r}{did_you_mean(text, list(CLASS_PRESETS))}; presets: {known},"
            " or a comma-separated list such as 0,1,7,A"
        )
    names = []
    for item in (t.strip() for t in text.split(",")):
        name = item.upper() if len(item) == 1 else item.lower()
        if name not in GLYPHS:
            raise SepconvError(
                f"unknown class {item!r} in --classes: use digits 0-9, letters A-Z, cat, fish, bird, rabbit"
                f" or a preset ({known})"
            )
        if name in names:
            raise SepconvError(f"class {name!r} is listed twice in --classes")
        names.append(name)
    if len(names) < 2:
        raise SepconvError(f"--classes needs at least 2 classes, got {text!r}")
    return tuple(names)


@dataclass(frozen=True)
class ChartSpec:
    """The arguments that determine a colour-chart data set (and its cache key)."""

    n: int = 7000
    classes: str = "mixed10"
    image_size: int = 32
    seed: int = 0
    axis: str = "random"
    # A preset (standard, hard, paper) or a level in [0, 1] of plate.difficulty_at. "standard" is the
    # fast demo's: every method scores ~100 % there; seed 000's tables use "paper".
    difficulty: str = "standard"
    render_scale: int = 8
    layout_pool_size: int = 256
    faint: float | None = None  # per-plate contrast spread (plate.Difficulty.faint); None: the difficulty's

    def __post_init__(self) -> None:
        # One spelling per difficulty ("0.50" is "0.5"), so equal data sets share one cache key;
        # a bad value stays as given for validate() to report.
        with contextlib.suppress(ValueError):
            object.__setattr__(self, "difficulty", canonical_difficulty(self.difficulty))
        with contextlib.suppress(TypeError, ValueError):
            object.__setattr__(self, "faint", None if self.faint is None else float(self.faint))

    @property
    def class_names(self) -> tuple[str, ...]:
        return parse_classes(self.classes)

    @property
    def per_batch_per_class(self) -> int:
        return self.n // ((TRAIN_BATCHES + TEST_BATCHES) * len(self.class_names))

    def validate(self) -> ChartSpec:
        """Raise a one-line :class:`SepconvError` for any impossible argument; returns self."""
        k = len(self.class_names)
        batches = TRAIN_BATCHES + TEST_BATCHES
        integers = {
            "--n": self.n,
            "--size": self.image_size,
            "--seed": self.seed,
            "--render-scale": self.render_scale,
            "--pool": self.layout_pool_size,
        }
        for flag, value in integers.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise SepconvError(f"{flag} must be an integer, got {value!r}")
        if self.n > MAX_PLATES:
            raise SepconvError(f"--n {self.n:,} is more than {MAX_PLATES:,} plates")
        if self.n < batches * k or self.n % (batches * k):
            raise SepconvError(
                f"--n {self.n} must be a positive multiple of {batches * k}: {batches} batches"
                f" ({TRAIN_BATCHES} train + {TEST_BATCHES} test) with equally many plates of each of {k} classes"
            )
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise SepconvError(
                f"--size {self.image_size} is out of range: images are {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels"
            )
        if self.axis not in AXIS_CHOICES:
            raise SepconvError(
                f"unknown axis {self.axis!r}{did_you_mean(self.axis, list(AXIS_CHOICES))};"
                f" choose {', '.join(AXIS_CHOICES)}"
            )
        try:
            canonical_difficulty(self.difficulty)
        except ValueError:
            raise SepconvError(
                f"unknown difficulty {self.difficulty!r}{did_you_mean(str(self.difficulty), list(DIFFICULTIES))};"
                f" choose {', '.join(DIFFICULTIES)} or a level between 0 (standard) and 1"
            ) from None
        if not 1 <= self.render_scale <= 16:
            raise SepconvError(f"--render-scale {self.render_scale} must lie in 1..16")
        if not 0 <= self.layout_pool_size <= MAX_POOL:
            raise SepconvError(f"--pool {self.layout_pool_size} must lie in 0 (pack every plate)..{MAX_POOL}")
        if not 0 <= self.seed <= MAX_SEED:
            raise SepconvError(f"--seed {self.seed} must lie in 0..2**63-1")
        if self.faint is not None:
            try:
                check_faint(self.faint)
            except (TypeError, ValueError):
                raise SepconvError(f"--faint {self.faint!r} must be a number in [0, 1)") from None
        return self

    def style(self) -> PlateStyle:
        return PlateStyle(
            self.class_names, self.difficulty, self.axis, self.image_size, self.render_scale, faint=self.faint
        )

    def key(self) -> str:
        """Stable hash of the arguments and the generator version (cache folder names). A difficulty
        on the continuous scale enters by its knobs, not its name: ``paper`` and its level share
        one set, and recalibrating ``paper`` can never reuse plates made for the old level."""
        canonical = {**asdict(self), "classes": list(self.class_names), "version": GENERATOR_VERSION}
        # `faint` enters by the value the plates get, and not at all where it is 0, so sets made
        # before the knob existed keep their keys (and caches).
        knobs = self.style().preset.to_dict()
        canonical.pop("faint")
        if self.difficulty in LEGACY_DIFFICULTIES:  # standard/hard keep their keys
            if knobs["faint"]:
                canonical["faint"] = knobs["faint"]
        else:
            drop = {"name"} | ({"faint"} if knobs["faint"] == 0 else set())
            canonical["difficulty"] = {k: v for k, v in knobs.items() if k not in drop}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def batch_plan(spec: ChartSpec) -> list[tuple[str, list[tuple[int, int]]]]:
    """The ten batches as (file name, [(class_id, sample_idx)] in stored order)."""
    k = len(spec.class_names)
    m = spec.per_batch_per_class
    plan = []
    for split, count, first_block, salt in (
        ("data_batch", TRAIN_BATCHES, 0, 1000),
        ("test_batch", TEST_BATCHES, TRAIN_BATCHES, 2000),
    ):
        for b in range(1, count + 1):
            start = (first_block + b - 1) * m
            plates = [(c, i) for c in range(k) for i in range(start, start + m)]
            order = np.random.default_rng([spec.seed, salt + b]).permutation(len(plates))
            plan.append((f"{split}_{b}", [plates[j] for j in order]))
    return plan


# ---- rendering, optionally in worker processes -------------------------------------------------

_WORKER: dict = {}


def _init_worker(style: PlateStyle, seed: int, pool: list[DotLayout]) -> None:
    _WORKER.update(style=style, seed=seed, pool=pool)


def _render_chunk(plates: list[tuple[int, int]]) -> tuple[np.ndarray, list[str]]:
    images, axes = [], []
    for class_id, idx in plates:
        plate = render_plate(
            _WORKER["style"], _WORKER["seed"], class_id, idx, _WORKER["pool"], return_debug=True
        )
        assert isinstance(plate, PlateDebug)
        images.append(plate.image)
        axes.append(plate.pair.axis)
    return np.stack(images), axes


def _pack_task(args: tuple[int, int, int]) -> DotLayout:
    return pack_pool_layout(*args)


def _context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and shares the layout pool without pickling it.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def render_all(
    spec: ChartSpec, plates: list[tuple[int, int]], workers: int = 1, progress: Progress | None = None
) -> tuple[np.ndarray, list[str]]:
    """Images (N, H, W, 3) and axes of ``plates`` in the given order (layout pool built first)."""
    style = spec.style()
    jobs = [(spec.seed, k, style.render_size) for k in range(spec.layout_pool_size)]
    chunk = max(1, min(64, math.ceil(len(plates) / (4 * workers))))
    chunks = [plates[i : i + chunk] for i in range(0, len(plates), chunk)]
    images: list[np.ndarray] = []
    axes: list[str] = []
    if workers <= 1:
        layouts = []
        for k, job in enumerate(jobs):
            layouts.append(_pack_task(job))
            if progress:
                progress("layouts", k + 1, len(jobs))
        _init_worker(style, spec.seed, layouts)
        for part in chunks:
            imgs, ax = _render_chunk(part)
            images.append(imgs)
            axes.extend(ax)
            if progress:
                progress("plates", len(axes), len(plates))
        _WORKER.clear()
    else:
        ctx = _context()
        with ctx.Pool(workers) as pool:
            layouts = []
            for layout in pool.imap(_pack_task, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                layouts.append(layout)
                if progress:
                    progress("layouts", len(layouts), len(jobs))
        with ctx.Pool(workers, initializer=_init_worker, initargs=(style, spec.seed, layouts)) as pool:
            for imgs, ax in pool.imap(_render_chunk, chunks):
                images.append(imgs)
                axes.extend(ax)
                if progress:
                    progress("plates", len(axes), len(plates))
    return np.concatenate(images), axes


# ---- files -------------------------------------------------------------------------------------


@dataclass
class GenerationReport:
    root: Path
    files: list[Path]
    seconds: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skipped: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def _pickle_bytes(obj: object) -> Callable[[io.BufferedWriter], None]:
    return lambda f: pickle.dump(obj, f, protocol=4)


def _check_writable(root: Path) -> None:
    """Fail in one line *before* minutes of work when ``root`` cannot take the files."""
    if not str(root).strip() or str(root) == ".":
        raise SepconvError("--out must name the folder to write (got an empty path)")
    if root.exists() and not root.is_dir():
        raise SepconvError(f"--out {root} exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SepconvError(f"cannot write to {root}: {exc.strerror or exc}") from None


def _existing_matches(root: Path, spec: ChartSpec, names: list[str]) -> dict | None:
    meta_path = root / META_FILE
    if not meta_path.is_file() or not all((root / n).is_file() for n in names):
        return None

    try:
        meta = read_pickle(meta_path)
    except SepconvError:
        return None
    return meta if isinstance(meta, dict) and meta.get("spec_key") == spec.key() else None


def preview_png(
    images: np.ndarray, labels: list[int], class_names: tuple[str, ...], columns: int = PREVIEW_COLUMNS
) -> bytes:
    """A grid with one labelled row per class (its first ``columns`` plates of ``images``),
    upscaled with nearest-neighbour so that each plate is at least 96 pixels wide."""
    size = images.shape[1]
    scale = max(1, math.ceil(96 / size))
    tile, pad = size * scale, max(4, scale)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=max(12, tile // 5))
    except TypeError:  # Pillow built without FreeType: the bitmap font takes no size
        font = ImageFont.load_default()
    label_width = 16 + max(
        int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(n, font=font)) for n in class_names
    )
    labels_arr = np.asarray(labels)
    columns = min(columns, max(int((labels_arr == c).sum()) for c in range(len(class_names))))
    rows = len(class_names)
    sheet = Image.new(
        "RGB", (label_width + columns * (tile + pad) + pad, rows * (tile + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(class_names):
        top = pad + c * (tile + pad)
        draw.text((8, top + tile // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        for j, i in enumerate(np.flatnonzero(labels_arr == c)[:columns]):
            plate = Image.fromarray(images[i]).resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(plate, (label_width + pad + j * (tile + pad), top))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def generate_colorchart(
    root: str | os.PathLike[str],
    spec: ChartSpec | None = None,
    workers: int = 1,
    force: bool = False,
    progress: Progress | None = None,
) -> GenerationReport:
    """Write the data set of ``spec`` to ``root``: ``data_batch_1..7``, ``test_batch_1..3``,
    ``batches.meta`` and ``preview.png``. Skips the work when ``root`` already holds this exact
    data set (same arguments and generator version) unless ``force``."""
    spec = (spec or ChartSpec()).validate()
    check_cpus(workers, "--workers")
    # The plates (uint8), and the training part once more in float64 for the statistics.
    size = spec.image_size
    check_memory(spec.n * size * size * 3 * (1 + 8), f"generating {spec.n:,} plates of {size}x{size}")
    if not str(root).strip():
        raise SepconvError("--out must name the folder to write (got an empty path)")
    root = Path(root).expanduser()
    plan = batch_plan(spec)
    names = [name for name, _ in plan] + [META_FILE, PREVIEW_FILE]
    _check_writable(root)
    clean_stale_temporaries(root)  # batches a killed run was writing
    start = time.perf_counter()
    if not force and (meta := _existing_matches(root, spec, names)) is not None:
        return GenerationReport(
            root, [root / n for n in names], 0.0, tuple(meta["mean"]), tuple(meta["std"]), skipped=True
        )

    # An old meta would vouch for a folder whose batches are about to be replaced one by one; without
    # it, an interrupted run leaves a folder that no loader mistakes for a complete data set.
    (root / META_FILE).unlink(missing_ok=True)
    plates = [p for _, batch in plan for p in batch]
    images, axes = render_all(spec, plates, workers, progress)
    class_names = spec.class_names
    per_batch = len(plan[0][1])
    train_count = TRAIN_BATCHES * per_batch
    train = images[:train_count].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in train.mean(axis=(0, 1, 2)))
    std = tuple(float(v) for v in train.std(axis=(0, 1, 2)))

    files = []
    for b, (name, batch) in enumerate(plan):
        part = slice(b * per_batch, (b + 1) * per_batch)
        # CIFAR rows: the R, G and B planes one after another, each row-major.
        data = np.ascontiguousarray(images[part].transpose(0, 3, 1, 2).reshape(per_batch, -1))
        split = "training" if name.startswith("data") else "testing"
        payload = {
            "batch_label": f"{split} batch {name.rsplit('_', 1)[1]} of colorchart {spec.classes} seed {spec.seed}",
            "data": data,
            "labels": [c for c, _ in batch],
            "filenames": [f"{class_names[c]}_{i:04d}.png" for c, i in batch],
            # The AXES constants themselves: pickle memoises by identity, so strings that came back
            # from worker processes as copies would otherwise change the bytes.
            "axes": [AXES[AXES.index(a)] for a in axes[part]],
        }
        atomic_write_bytes(root / name, _pickle_bytes(payload))
        files.append(root / name)

    meta = {
        "label_names": list(class_names),
        "num_cases_per_batch": per_batch,
        "num_vis": 3 * spec.image_size * spec.image_size,
        "mean": list(mean),
        "std": list(std),
        # Augmentation facts the CIFAR loader honours: mirroring a glyph makes another (or no)
        # class, and crops must pad with the canvas colour, not black (see ImageDataset.pad_fill).
        "flip": False,
        "pad_fill": list(PAPER),
        "generator_version": GENERATOR_VERSION,
        "spec_key": spec.key(),
        "classes": spec.classes,
        "n": spec.n,
        "image_size": spec.image_size,
        "seed": spec.seed,
        "axis": spec.axis,
        "difficulty": spec.difficulty,
        "render_scale": spec.render_scale,
        "layout_pool_size": spec.layout_pool_size,
        "faint": spec.style().preset.faint,
    }
    test_start = train_count
    test_labels = [c for _, batch in plan[TRAIN_BATCHES:] for c, _ in batch]
    png = preview_png(images[test_start:], test_labels, class_names)
    atomic_write_bytes(root / PREVIEW_FILE, lambda f: f.write(png))
    # The meta goes last: a folder with a matching meta is complete (see _existing_matches).
    atomic_write_bytes(root / META_FILE, _pickle_bytes(meta))
    files += [root / PREVIEW_FILE, root / META_FILE]
    counts = {"train": train_count, "test": len(plates) - train_count}
    return GenerationReport(root, files, time.perf_counter() - start, mean, std, counts=counts)  # type: ignore[arg-type]
