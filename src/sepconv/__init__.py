"""sepconv — make CNNs small and fast with depthwise-separable convolutions."""

from .checkpoint import load_model, save_model
from .errors import SepconvError
from .measure.profile import Profile, profile
from .models.registry import create_model, list_models
from .train.api import train
from .train.evaluation import evaluate

__version__ = "0.1.0"

__all__ = [
    "Profile",
    "SepconvError",
    "create_model",
    "evaluate",
    "list_models",
    "load_model",
    "profile",
    "save_model",
    "train",
]
