"""Recipes: one typed pydantic model per stage; YAML is only their serialization."""

from avokit.recipe.capture import CaptureConfig
from avokit.recipe.corpus import CorpusConfig, CorpusSource
from avokit.recipe.evaluation import EvalConfig, GateConfig, ReleaseConfig
from avokit.recipe.generate import GenerateConfig, PromptSource
from avokit.recipe.load import BUILTIN_RECIPES, load_recipe, recipe_from_dict
from avokit.recipe.recipe import Recipe
from avokit.recipe.student import StudentConfig, StudentTokenizerConfig
from avokit.recipe.teachers import TeacherConfig
from avokit.recipe.train import FusionConfig, LossConfig, TrainConfig

__all__ = [
    "BUILTIN_RECIPES",
    "CaptureConfig",
    "CorpusConfig",
    "CorpusSource",
    "EvalConfig",
    "FusionConfig",
    "GateConfig",
    "GenerateConfig",
    "LossConfig",
    "PromptSource",
    "Recipe",
    "ReleaseConfig",
    "StudentConfig",
    "StudentTokenizerConfig",
    "TeacherConfig",
    "TrainConfig",
    "load_recipe",
    "recipe_from_dict",
]
