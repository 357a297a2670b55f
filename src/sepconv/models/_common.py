"""What the zoo's model families share: channel rounding, weight initialisation, option checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.nn as nn

from ..errors import SepconvError


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going down by more than 10%.

    This is the rounding of the TensorFlow/torchvision MobileNets and GhostNet; the reference
    counts of those models depend on it bit for bit.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def kaiming_init_(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal (fan-out, ReLU gain) convs, unit BN, small FC.

    Fan-out keeps the backward signal's variance at 1 through depthwise convs, whose fan-in is
    only k×k; the final linear layer starts near zero so that the initial logits are near uniform.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def positive_float(name: str, value: Any) -> float:
    """``value`` as a float > 0, or a one-line :class:`SepconvError` naming the option."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SepconvError(f"option {name} must be a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise SepconvError(f"option {name} must be a positive number, got {value!r}")
    return number


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int > 0 (integral floats accepted), or a one-line :class:`SepconvError`."""
    if isinstance(value, bool):
        raise SepconvError(f"option {name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SepconvError(f"option {name} must be a positive integer, got {value!r}") from None
    if number != value and not (isinstance(value, str) and value.strip() == str(number)):
        raise SepconvError(f"option {name} must be a positive integer, got {value!r}")
    if number < 1:
        raise SepconvError(f"option {name} must be a positive integer, got {value!r}")
    return number


def flag(name: str, value: Any) -> bool:
    """A boolean option; the strings true/false/1/0/yes/no are accepted from command lines."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SepconvError(f"option {name} must be true or false, got {value!r}")


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is among ``choices`` (compared as given), else a one-line error."""
    options = list(choices)
    for choice in options:
        if value == choice or (isinstance(value, str) and str(choice) == value.strip()):
            return choice
    listed = ", ".join(map(str, options))
    raise SepconvError(f"option {name} must be one of {listed}, got {value!r}")
