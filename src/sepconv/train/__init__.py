"""Training: the engine (:class:`Trainer`), LR schedules, callbacks, evaluation and DDP.

``sepconv.train`` at the package top level is the :func:`~sepconv.train.api.train` function, which
hides this sub-package's name there; import from its modules explicitly instead, e.g.
``from sepconv.train.callbacks import Callback`` or ``from sepconv.train.engine import Trainer``.
"""

from .api import train
from .callbacks import Callback
from .engine import TrainConfig, Trainer
from .evaluation import evaluate
from .schedules import make_schedule

__all__ = ["Callback", "TrainConfig", "Trainer", "evaluate", "make_schedule", "train"]
