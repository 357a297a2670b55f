"""The registered ``colorchart`` data set: generated once into a cache folder, then read back
through the CIFAR loader.

``--data colorchart`` is the default set (7,000 plates of ``mixed10``, 32×32, ``standard``, seed 0);
``colorchart:paper`` the calibrated one seed 000's tables use (level 0.5, faint 0.95; train it with
the curriculum ``TrainConfig.curriculum=colorchart`` for one epoch), ``colorchart:difficulty=0.7`` any level.
Options follow a colon, comma-separated: bare words name a class preset (``digits``), a difficulty
(``standard``) or an axis (``tritan``); ``key=value`` sets ``n``, ``size``, ``seed``, ``classes``
(a preset or glyphs joined by ``/``: ``classes=0/1/7/A``), ``axis``, ``difficulty``,
``render_scale``, ``pool`` or ``faint`` (per-plate contrast spread in [0, 1), see
:class:`~.plate.Difficulty`). Example: ``--data colorchart:digits,standard,seed=3``.

The folder is ``$SEPCONV_CACHE/colorchart-<key>`` (default ``~/.cache/sepconv``), where the key
hashes the options and the generator version. It is generated in a temporary sibling folder and
renamed into place only when complete, so an interrupted run never leaves a half-written set
behind; concurrent first uses both generate and the second rename simply loses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

from ...errors import SepconvError, did_you_mean
from ...io import owner_tag, writer_is_dead
from ...resources import available_cpus
from ..cifar import CIFAR10, load_cifar_batches
from ..dataset import ImageDataset, Stats
from .generate import META_FILE, ChartSpec, generate_colorchart
from .glyphs import CLASS_PRESETS
from .plate import AXIS_CHOICES, DIFFICULTIES

# Option name in a data spec -> ChartSpec field.
OPTION_FIELDS = {
    "n": "n",
    "classes": "classes",
    "size": "image_size",
    "seed": "seed",
    "axis": "axis",
    "difficulty": "difficulty",
    "render_scale": "render_scale",
    "pool": "layout_pool_size",
    "faint": "faint",
}
STALE_TEMP_SECONDS = 24 * 3600


def parse_options(arg: str | None) -> ChartSpec:
    """``ARG`` of ``colorchart:ARG`` -> a validated :class:`ChartSpec`."""
    spec = ChartSpec()
    if not arg:
        return spec
    types = {f.name: f.type for f in fields(ChartSpec)}
    for token in (t.strip() for t in arg.split(",")):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep:
            if token in CLASS_PRESETS:
                spec = replace(spec, classes=token)
            elif token in DIFFICULTIES:
                spec = replace(spec, difficulty=token)
            elif token in AXIS_CHOICES:
                spec = replace(spec, axis=token)
            else:
                words = [*CLASS_PRESETS, *DIFFICULTIES, *AXIS_CHOICES]
                raise SepconvError(
                    f"unknown colorchart option {token!r}{did_you_mean(token, words)}; use a class preset"
                    f" ({', '.join(CLASS_PRESETS)}), a difficulty ({', '.join(DIFFICULTIES)}), an axis"
                    f" ({', '.join(AXIS_CHOICES)}) or KEY=VALUE with KEY in {', '.join(OPTION_FIELDS)}"
                )
            continue
        name = OPTION_FIELDS.get(key.strip())
        if name is None:
            raise SepconvError(
                f"unknown colorchart option {key!r}{did_you_mean(key, list(OPTION_FIELDS))};"
                f" keys: {', '.join(OPTION_FIELDS)}"
            )
        value = value.strip()
        if name == "faint":
            try:
                parsed: int | float | str = float(value)
            except ValueError:
                raise SepconvError(f"colorchart option {key}={value!r} needs a number in [0, 1)") from None
        elif types[name] in (int, "int"):
            try:
                parsed = int(value)
            except ValueError:
                raise SepconvError(f"colorchart option {key}={value!r} needs an integer") from None
        else:
            parsed = value.replace("/", ",") if name == "classes" else value
        spec = replace(spec, **{name: parsed})
    return spec.validate()


def cache_root() -> Path:
    return Path(os.environ.get("SEPCONV_CACHE") or Path.home() / ".cache" / "sepconv").expanduser()


def cached_colorchart(spec: ChartSpec, workers: int | None = None, quiet: bool = False) -> Path:
    """The folder holding ``spec``'s data set, generating it first if the cache lacks it."""
    spec = spec.validate()
    root = cache_root()
    final = root / f"colorchart-{spec.key()}"
    if (final / META_FILE).is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(root, spec.key())
        tmp = Path(tempfile.mkdtemp(prefix=f".colorchart-{spec.key()}.{owner_tag()}.", dir=root))
    except OSError as exc:
        raise SepconvError(f"cannot write the colorchart cache in {root}: {exc.strerror or exc}") from None
    workers = workers or min(8, available_cpus())
    if not quiet:
        print(
            f"sepconv: generating colorchart ({spec.n} plates, {workers} workers) into {final}; later runs reuse it",
            file=sys.stderr,
        )
    try:
        generate_colorchart(tmp, spec, workers=workers)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / META_FILE).is_file():  # not a concurrent winner: a real failure
                raise
    except OSError as exc:
        raise SepconvError(f"cannot write the colorchart cache in {root}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_temporaries(root: Path, key: str) -> None:
    # Leftovers of interrupted runs: at once when their writer is a dead process of this machine;
    # others (another machine's, an old naming) may belong to a run still in progress, so by age.
    now = time.time()
    for leftover in root.glob(f".colorchart-{key}.*"):
        with contextlib.suppress(OSError):
            dead = writer_is_dead(leftover.name)
            if dead or (dead is None and now - leftover.stat().st_mtime > STALE_TEMP_SECONDS):
                shutil.rmtree(leftover, ignore_errors=True)


def load_colorchart(arg: str | None, train: bool, stats: Stats | None = None) -> ImageDataset:
    """Registry loader for ``colorchart[:OPTIONS]`` (see the module docstring)."""
    spec = parse_options(arg)
    # No flips: mirroring a glyph makes another (or no) class.
    dataset = load_cifar_batches(cached_colorchart(spec), train, CIFAR10, flip=False, stats=stats)
    dataset.extra["colorchart"] = spec
    return dataset
