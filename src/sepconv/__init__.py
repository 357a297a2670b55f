"""sepconv — make CNNs small and fast with depthwise-separable convolutions."""

from .checkpoint import load_model, save_model
from .convert.decompose import decompose
from .convert.fold import fold
from .convert.fold_bn import fold_batchnorm
from .convert.separable import to_separable
from .errors import SepconvError
from .export import export_onnx
from .graph import compact, dependency_groups
from .measure.latency import benchmark
from .measure.profile import Profile, profile
from .models.registry import create_model, list_models
from .train.api import train
from .train.evaluation import evaluate

__version__ = "0.1.0"

__all__ = [
    "Profile",
    "SepconvError",
    "benchmark",
    "compact",
    "create_model",
    "decompose",
    "dependency_groups",
    "evaluate",
    "export_onnx",
    "fold",
    "fold_batchnorm",
    "list_models",
    "load_model",
    "profile",
    "save_model",
    "to_separable",
    "train",
]
