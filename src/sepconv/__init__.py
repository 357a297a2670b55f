"""sepconv — make CNNs small and fast with depthwise-separable convolutions.

Importing the package registers everything built in: the model zoo and its derived variants,
the structural transformations (so checkpoints rebuild), the criteria and the compression methods.
"""

from . import methods  # noqa: F401  (registers the compression methods)
from .checkpoint import load_model, save_model
from .convert.decompose import decompose
from .convert.fold import fold
from .convert.separable import to_separable
from .deploy.export import export
from .deploy.fold_bn import fold_batchnorm
from .deploy.onnx import ExportOptions, export_onnx
from .errors import SepconvError
from .graph import compact, dependency_groups
from .measure.latency import benchmark
from .measure.profile import Profile, profile
from .methods import Method, get_method, list_methods, register_method
from .models.registry import create_model, list_models, register_model
from .pipeline import Recipe, load_recipe, run_recipe
from .prune.criteria import get_criterion, register_criterion
from .train.api import train
from .train.config import TrainConfig
from .train.evaluation import evaluate

__version__ = "0.2.0"

__all__ = [
    "ExportOptions",
    "Method",
    "Profile",
    "Recipe",
    "SepconvError",
    "TrainConfig",
    "benchmark",
    "compact",
    "create_model",
    "decompose",
    "dependency_groups",
    "evaluate",
    "export",
    "export_onnx",
    "fold",
    "fold_batchnorm",
    "get_criterion",
    "get_method",
    "list_methods",
    "list_models",
    "load_model",
    "load_recipe",
    "profile",
    "register_criterion",
    "register_method",
    "register_model",
    "run_recipe",
    "save_model",
    "to_separable",
    "train",
]
