"""Swap a pipeline's sampler by cloning its scheduler config (betas, timestep spacing, ...).

Cloning keeps the noise schedule the model was trained with and changes only the solver:
`dpm` is DPM-Solver++ (multistep) with Karras sigmas, `euler_a` is Euler ancestral.
"""

from __future__ import annotations

from ecad_ray.errors import UserError


def swap_scheduler(pipe, name: str, model: str) -> str:
    """Install the scheduler `name` on `pipe` (`auto` keeps its own); return its class name."""
    current = type(pipe.scheduler).__name__
    if name == "auto":
        return current
    if current.startswith("FlowMatch"):
        raise UserError(
            f"--scheduler {name}: {model} samples with a flow-matching scheduler ({current}); "
            "DPM-Solver++ / Euler ancestral expect a noise-prediction model, use --scheduler auto"
        )
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    config = pipe.scheduler.config
    if name == "dpm":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            config, use_karras_sigmas=True, algorithm_type="dpmsolver++"
        )
    elif name == "euler_a":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(config)
    else:
        raise UserError(f"--scheduler {name}: unknown; choose one of auto, dpm, euler_a")
    return type(pipe.scheduler).__name__
