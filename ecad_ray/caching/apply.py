"""Apply an ECAD schedule to a diffusers PixArt-α/Σ or FLUX transformer: install the hooks.

Nothing of diffusers is copied or subclassed. `apply_schedule` validates the schedule against
the transformer, then attaches

* a step hook on the transformer's forward (`step_hook.py`): which denoising step a call is,
  and TGATE's CFG drop after the gate step;
* a sub-layer hook on each cached module (`sublayer_hook.py`), as the model family maps
  schedule components to modules (`ModelFamily.sublayer_modules`: PixArt `attn1`/`attn2`/`ff`,
  FLUX `attn`/`ff`/`ff_context` and single-block `proj_mlp`/`attn`/`proj_out`);
* with a pipeline, a wrapper on its scheduler's `set_timesteps`, so each pipeline call starts
  a fresh run and a step-count mismatch is one clear error.

The returned handle removes them all again and holds the run's `CacheStats`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ecad_ray.caching.patching import wrap_attribute
from ecad_ray.caching.run_state import CacheStats, RunState
from ecad_ray.caching.schedule import Schedule
from ecad_ray.caching.step_hook import ScheduleStepHook
from ecad_ray.caching.sublayer_hook import SubLayerCacheHook
from ecad_ray.caching.validate import validate_schedule
from ecad_ray.errors import UserError
from ecad_ray.models.families import family_of_config

_HANDLE_ATTR = "_ecad_schedule_handle"  # set on a transformer while a schedule is applied to it


@dataclass(frozen=True)
class ScheduleCacheConfig:
    """How a schedule is applied.

    Args:
        schedule: the ECAD schedule; step s, block b, sub-layer c: `true` computes c at s and
            `false` returns c's output from the last step it was computed (a reuse with
            nothing cached yet recomputes and warns once per step).
        cache_dtype: dtype cached outputs are held in (e.g. `torch.float16` to halve cache
            memory); reused outputs are cast back to the dtype they were computed in.
            `None` keeps them as computed (bit-exact reuse).
        cfg: whether the transformer's batch is a CFG pair `[uncond, cond]`; only TGATE uses
            it. `None` detects it at a run's first step: an even batch whose two halves of
            `hidden_states` are equal (how the PixArt pipeline feeds latents under CFG).
    """

    schedule: Schedule
    cache_dtype: torch.dtype | None = None
    cfg: bool | None = None


class ScheduleCacheHandle:
    """An applied schedule: `remove()` restores the stock model; `stats` says what it did."""

    def __init__(self, transformer, state: RunState, step_hook: ScheduleStepHook, scheduler=None):
        self.transformer = transformer
        self.state = state
        self.step_hook = step_hook
        self.scheduler = scheduler
        self._undo_scheduler: Callable[[], None] = lambda: None

    @property
    def stats(self) -> CacheStats:
        """Counters and cache bytes (current and peak)."""
        return self.state.stats

    @property
    def peak_cache_bytes(self) -> int:
        """Largest number of bytes the cache held at once."""
        return self.state.stats.peak_bytes

    def reset(self) -> None:
        """Drop cached outputs and start the next call at step 0."""
        self.state.reset()

    def remove(self) -> None:
        """Detach every hook; the transformer behaves as stock again."""
        for hook in self.state.sublayers:
            hook.detach()
        self.step_hook.detach()
        if self.scheduler is not None:
            self._undo_scheduler()
            self.scheduler = None
        if getattr(self.transformer, _HANDLE_ATTR, None) is self:
            delattr(self.transformer, _HANDLE_ATTR)

    def __enter__(self) -> "ScheduleCacheHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def apply_schedule_cache(transformer, config: ScheduleCacheConfig, scheduler=None) -> ScheduleCacheHandle:
    """Attach the hooks of `config` to `transformer` (validated first); see module docstring.

    Pass the pipeline's `scheduler` so each pipeline call starts a fresh run (and a step-count
    mismatch is caught); without it a run restarts when the timestep goes up or after the
    schedule's last step.
    """
    schedule = config.schedule
    if getattr(transformer, _HANDLE_ATTR, None) is not None:
        raise UserError("this transformer already has a caching schedule applied; call handle.remove() first")
    validate_schedule(schedule, transformer, source=f"schedule {schedule.name}")
    state = RunState(num_steps=schedule.num_inference_steps)
    tgate_blocks = schedule.tgate_blocks()
    family = family_of_config(dict(transformer.config))
    for (block, comp), module in family.sublayer_modules(transformer).items():
        hook = SubLayerCacheHook(state, block, comp, schedule, config.cache_dtype,
                                 tgate=comp == family.cross_attention and block in tgate_blocks)
        hook.attach(module)
        state.sublayers.append(hook)
    step_hook = ScheduleStepHook(state, schedule, config.cfg)
    step_hook.attach(transformer)
    handle = ScheduleCacheHandle(transformer, state, step_hook)
    if scheduler is not None:
        handle._undo_scheduler = _attach_scheduler_reset(scheduler, handle, config)
        handle.scheduler = scheduler
    setattr(transformer, _HANDLE_ATTR, handle)
    return handle


def _attach_scheduler_reset(scheduler, handle: ScheduleCacheHandle, config: ScheduleCacheConfig) -> Callable[[], None]:
    original = scheduler.set_timesteps
    n = config.schedule.num_inference_steps

    @functools.wraps(original)
    def set_timesteps(*args, **kwargs):
        result = original(*args, **kwargs)
        handle.reset()
        count = len(scheduler.timesteps)
        if count != n:
            raise UserError(
                f"schedule {config.schedule.name}: covers {n} steps but the pipeline runs {count}; "
                f"use num_inference_steps={n}"
            )
        return result

    return wrap_attribute(scheduler, "set_timesteps", set_timesteps)


def apply_schedule(target, schedule: Schedule, cache_dtype: torch.dtype | None = None,
                   cfg: bool | None = None) -> ScheduleCacheHandle:
    """Apply `schedule` to a pipeline (uses its `.transformer` and `.scheduler`) or a transformer."""
    config = ScheduleCacheConfig(schedule=schedule, cache_dtype=cache_dtype, cfg=cfg)
    transformer = getattr(target, "transformer", None)
    if transformer is not None:
        return apply_schedule_cache(transformer, config, scheduler=getattr(target, "scheduler", None))
    return apply_schedule_cache(target, config)
