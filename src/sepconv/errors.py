"""User-facing errors.

Anything a user can get wrong (a name, a path, a file, an argument) raises :class:`SepconvError`
with a one-line message; the CLI prints it as ``sepconv: error: <message>`` and exits non-zero,
never with a traceback. Bugs in sepconv itself stay ordinary exceptions.
"""

from __future__ import annotations

import difflib


class SepconvError(Exception):
    """A problem with the user's input, reported in one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep the message to one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))


class UnknownNameError(SepconvError, KeyError):
    """A model, data set, criterion, method ... name that is not registered."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]


class CheckpointError(SepconvError):
    """A checkpoint that is missing, truncated, corrupt or of another architecture."""


class DataError(SepconvError):
    """A data set that is missing or malformed."""


class TrainingDivergedError(SepconvError):
    """The loss became NaN or infinite."""

    exit_code = 3


class TrainingStalledError(SepconvError):
    """Training never left chance level (see ``TrainConfig.stall_epochs``): the model is no result."""

    exit_code = 4


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name if it has none), cut to ``limit``:
    third-party messages can run over many lines, and ours are one line."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
