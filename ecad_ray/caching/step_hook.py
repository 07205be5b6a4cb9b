"""The step hook on the transformer's forward: which denoising step a call is, and TGATE's CFG drop.

The step is a counter driven by the calls themselves; it restarts when the pipeline's scheduler
sets new timesteps (`apply.py` wraps `set_timesteps`), when the timestep goes up, or after the
schedule's last step. After TGATE's gate step it runs only the conditional half of a CFG batch.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Callable

import torch

from ecad_ray.caching.patching import wrap_attribute
from ecad_ray.caching.run_state import RunState
from ecad_ray.caching.schedule import Schedule
from ecad_ray.caching.tensor_tree import map_output
from ecad_ray.errors import UserError


class ScheduleStepHook:
    """Counts the transformer's calls as denoising steps and applies TGATE's CFG drop."""

    def __init__(self, state: RunState, schedule: Schedule, cfg: bool | None):
        """`cfg`: whether the batch is a CFG pair (None: detect it; see `ScheduleCacheConfig`)."""
        self.state = state
        self.schedule = schedule
        self.cfg = cfg
        self.gate = schedule.tgate_gate_step
        self._module: torch.nn.Module | None = None
        self._original: Callable | None = None
        self._signature: inspect.Signature | None = None

    def attach(self, transformer: torch.nn.Module) -> None:
        """Wrap the transformer's forward."""
        self._module = transformer
        self._original = transformer.forward
        self._signature = inspect.signature(self._original)
        self._undo = wrap_attribute(transformer, "forward",
                                    functools.update_wrapper(functools.partial(self._forward), self._original))

    def detach(self) -> None:
        """Restore the transformer's own forward."""
        if self._module is not None:
            self._undo()
            self._module = None

    def _begin(self, bound: inspect.BoundArguments) -> None:
        state = self.state
        timestep = bound.arguments.get("timestep")
        t = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else (
            float(timestep) if timestep is not None else None)
        if state.next_step >= state.num_steps:
            state.reset()
        if state.next_step > 0 and t is not None and state.last_timestep is not None:
            if t > state.last_timestep:  # a new denoising run began without a scheduler reset
                state.reset()
            elif t == state.last_timestep:
                raise UserError(
                    f"schedule {self.schedule.name}: the transformer was called twice at timestep {t}; "
                    "a schedule assumes one transformer call per step (no separate true-CFG passes)"
                )
        if state.next_step == 0:
            state.stats.runs += 1
            hidden = bound.arguments.get("hidden_states")
            state.cfg_active = self._detect_cfg(hidden)
        state.step = state.next_step
        state.last_timestep = t
        state.halved = self.gate is not None and state.cfg_active and state.step >= self.gate

    def _detect_cfg(self, hidden: torch.Tensor | None) -> bool:
        if self.gate is None:
            return False
        if self.cfg is not None:
            return self.cfg
        if hidden is None or hidden.shape[0] % 2:
            return False
        half = hidden.shape[0] // 2
        return bool(torch.equal(hidden[:half], hidden[half:]))

    def _forward(self, *args, **kwargs):
        bound = self._signature.bind(*args, **kwargs)
        self._begin(bound)
        state = self.state
        try:
            if state.halved:
                out = self._run_cond_half(bound)
            else:
                out = self._original(*args, **kwargs)
        finally:
            step = state.step
            state.step = None
            state.next_step += 1
        if state.empty_reuses:
            warnings.warn(
                f"schedule {self.schedule.name}: step {step}: {len(state.empty_reuses)} sub-layer(s) asked "
                f"to reuse with nothing cached ({', '.join(state.empty_reuses[:3])}"
                f"{', ...' if len(state.empty_reuses) > 3 else ''}); recomputed",
                stacklevel=2,
            )
            state.empty_reuses.clear()
        if state.next_step >= state.num_steps:
            state.reset()  # the run is over: free the cache
        return out

    def _run_cond_half(self, bound: inspect.BoundArguments):
        """Run the cond half of a CFG batch and return it twice (TGATE after the gate step).

        The pipeline's guidance `u + g * (c - u)` then gives exactly `c`: the run continues
        without CFG, as TGATE does, and no pipeline code is replaced.
        """
        full = bound.arguments["hidden_states"].shape[0]
        half = full // 2

        def take(value):
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == full:
                return value[half:]
            if isinstance(value, dict):
                return {k: take(v) for k, v in value.items()}
            return value

        args = {k: take(v) for k, v in bound.arguments.items()}
        kwargs = args.pop("kwargs", {}) if "kwargs" in self._signature.parameters else {}
        out = self._original(**args, **kwargs)
        return map_output(lambda t: torch.cat([t, t]), out)
