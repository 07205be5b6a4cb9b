"""VAR: next-scale image generation with FastVAR-style per-scale token pruning.

Main entry points: `load_var_model(name)` -> `VarPipeline` (step-wise `start/step/finish`
or one-shot `generate`), controllers in `ecad_ray.var.controllers`, outputs in
`ecad_ray.var.outputs`. See docs/var.md.
"""

from ecad_ray.var.checkpoints import build_models, load_var_model
from ecad_ray.var.config import VarModelConfig, preset
from ecad_ray.var.controllers import NoPruning, TailPattern, WidthRatios, make_controller
from ecad_ray.var.generation import GenerationResult, VarPipeline

__all__ = ["build_models", "load_var_model", "VarModelConfig", "preset", "NoPruning", "TailPattern",
           "WidthRatios", "make_controller", "GenerationResult", "VarPipeline"]
