"""Recipes (a starting model, data, and steps) and running them; the demo study."""

from .recipe import Recipe, Step, load_recipe, method_recipe, recipe_from_dict
from .run import run_recipe

__all__ = ["Recipe", "Step", "load_recipe", "method_recipe", "recipe_from_dict", "run_recipe"]
