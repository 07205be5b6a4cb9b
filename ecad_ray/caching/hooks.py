"""Apply an ECAD schedule to a diffusers PixArt-α/Σ or FLUX transformer with forward hooks.

Nothing of diffusers is copied or subclassed. Two kinds of hook are attached:

* a step hook on the transformer's `forward`, which knows which denoising step a call is
  (a counter driven by the calls themselves; reset when the pipeline's scheduler sets new
  timesteps, when the timestep goes up, or after the schedule's last step) and, for TGATE,
  drops the CFG half of the batch after the gate step;
* a sub-layer hook on each cached module, as the model family maps schedule components to
  modules (`ModelFamily.sublayer_modules`: PixArt `attn1`/`attn2`/`ff`, FLUX `attn`/`ff`/
  `ff_context` and single-block `proj_mlp`/`attn`/`proj_out`). It replaces the module's
  output by the cached one when the schedule says `false`. Because the hook sits on the
  sub-layer, what is cached is its output *before* the block applies its adaLN gate and
  residual add, which the block keeps computing every step, as ECAD defines.

Each cached output lives only while a later step reuses it (see `liveness`).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ecad_ray.caching.liveness import plan_sublayer
from ecad_ray.caching.schedule import Schedule
from ecad_ray.caching.validate import validate_schedule
from ecad_ray.errors import UserError
from ecad_ray.models.families import family_of_config

SCHEDULE_STEP_HOOK = "ecad_schedule_step"  # the hook on the transformer's forward
SUBLAYER_CACHE_HOOK = "ecad_sublayer_cache"  # the hook on each cached sub-layer's forward
SCHEDULER_RESET_HOOK = "ecad_scheduler_reset"  # the hook on the pipeline scheduler's set_timesteps
_HANDLE_ATTR = "_ecad_schedule_handle"


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
        check_steps: with a pipeline, raise when its scheduler sets a number of timesteps
            other than the schedule's `num_inference_steps`.
    """

    schedule: Schedule
    cache_dtype: torch.dtype | None = None
    cfg: bool | None = None
    check_steps: bool = True


@dataclass
class CacheStats:
    """What the cache did since it was applied (sums over runs; `peak_bytes` is the max)."""

    runs: int = 0
    computed: int = 0  # sub-layer calls that ran the module
    reused: int = 0  # sub-layer calls served from the cache
    empty_cache_recomputes: int = 0  # reuses that found nothing cached and recomputed
    skipped_unconsumed: int = 0  # scheduled computes skipped because nothing ever used the output
    current_bytes: int = 0
    peak_bytes: int = 0  # the largest total held by the cache at any moment


@dataclass
class _RunState:
    """State shared by every hook of one applied schedule; `reset()` starts a new run."""

    num_steps: int
    step: int | None = None  # step of the transformer call in progress, None outside calls
    next_step: int = 0
    last_timestep: float | None = None
    cfg_active: bool = False  # the run's batch is a CFG pair
    halved: bool = False  # this call runs only the cond half (TGATE after the gate)
    empty_reuses: list[str] = field(default_factory=list)
    stats: CacheStats = field(default_factory=CacheStats)
    sublayers: list["SubLayerCacheHook"] = field(default_factory=list)

    def reset(self) -> None:
        """Forget every cached output and start counting steps from 0."""
        for hook in self.sublayers:
            hook.reset()
        self.next_step = 0
        self.last_timestep = None
        self.step = None
        self.halved = False


def _wrap_attribute(obj, name: str, wrapper) -> Callable[[], None]:
    """Set `obj.name = wrapper` as an instance attribute; return the undo.

    The undo puts back an instance attribute that was there before (another library's hook,
    e.g. accelerate's offloading), or removes ours so the class method shows through again.
    """
    had, previous = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, wrapper)

    def undo() -> None:
        if had:
            setattr(obj, name, previous)
        else:
            vars(obj).pop(name, None)

    return undo


def _tree_map(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(_tree_map(fn, v) for v in value)
    if isinstance(value, list):
        return [_tree_map(fn, v) for v in value]
    return value


def _tree_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tree_tensors(v)]
    return []


def _nbytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tree_tensors(value))


class SubLayerCacheHook:
    """Serves one sub-layer's output from the cache on the steps the schedule says `false`."""

    name = SUBLAYER_CACHE_HOOK

    def __init__(self, state: _RunState, block: str, component: str, schedule: Schedule,
                 cache_dtype: torch.dtype | None, tgate: bool):
        self.state = state
        self.block = block
        self.component = component
        self.plan = plan_sublayer(schedule, block, component)
        self.flagged_reuse_at_0 = not schedule.recompute(0, block, component)
        self.cache_dtype = cache_dtype
        self.tgate = tgate  # reuse = mean of the CFG halves when the batch was halved
        self.cached: Any = None
        self.cached_dtypes: list[torch.dtype] = []
        self._module: torch.nn.Module | None = None
        self._original: Callable | None = None
        self._out_features = 0

    # -- attaching -------------------------------------------------------------------------
    def attach(self, module: torch.nn.Module) -> None:
        """Wrap `module.forward` (an instance attribute, removed again by `detach`)."""
        self._module = module
        self._out_features = getattr(module, "out_features", None) or getattr(module, "inner_dim", 0)
        self._original = module.forward
        self._undo = _wrap_attribute(module, "forward",
                                     functools.update_wrapper(functools.partial(self._forward), self._original))

    def detach(self) -> None:
        """Restore the module's own forward and drop the cache."""
        if self._module is not None:
            self._undo()
            self._module = None
        self.reset()

    def reset(self) -> None:
        """Drop the cached output (a new run starts)."""
        self._set(None)

    # -- the cache -------------------------------------------------------------------------
    def _set(self, value: Any) -> None:
        stats = self.state.stats
        stats.current_bytes += _nbytes(value) - _nbytes(self.cached)
        stats.peak_bytes = max(stats.peak_bytes, stats.current_bytes)
        self.cached = value

    def _store(self, output: Any) -> None:
        self.cached_dtypes = [t.dtype for t in _tree_tensors(output)]
        if self.cache_dtype is None:
            self._set(_tree_map(torch.Tensor.detach, output))
        else:
            self._set(_tree_map(lambda t: t.detach().to(self.cache_dtype), output))

    def _restore(self, value: Any) -> Any:
        if self.cache_dtype is None:
            return value
        dtypes = iter(self.cached_dtypes)
        return _tree_map(lambda t: t.to(next(dtypes)), value)

    def _lookup(self, batch: int) -> Any:
        """The cached output fitted to `batch`, or None when nothing usable is cached."""
        if self.cached is None:
            return None
        held = _tree_tensors(self.cached)[0].shape[0]
        if held == batch:
            return self.cached
        if self.state.halved and held == 2 * batch:
            if self.tgate:  # TGATE: cross-attention of both CFG halves, averaged
                reduced = _tree_map(lambda t: (t[:batch] + t[batch:]) / 2, self.cached)
            else:  # the run continues the conditional half only
                reduced = _tree_map(lambda t: t[batch:], self.cached)
            self._set(reduced)
            return reduced
        return None

    def _placeholder(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like the output, for a step where nothing consumes it (FLUX single blocks)."""
        return x.new_zeros((*x.shape[:-1], self._out_features))

    def _forward(self, *args, **kwargs):
        state = self.state
        s = state.step
        if s is None:  # called outside a counted transformer call: behave as stock
            return self._original(*args, **kwargs)
        plan = self.plan
        x = args[0] if args else kwargs.get("hidden_states")
        output = None
        if plan.compute[s]:
            self._set(None)  # superseded by this step's output
            if s == 0 and self.flagged_reuse_at_0 and plan.runs(s):
                state.empty_reuses.append(f"block {self.block} {self.component}")
                state.stats.empty_cache_recomputes += 1
            if not plan.runs(s):  # nothing consumes it, now or later
                state.stats.skipped_unconsumed += 1
                return self._placeholder(x)
        elif plan.consumed[s]:
            output = self._lookup(x.shape[0])
            if output is None:  # e.g. the batch size changed mid-run
                state.empty_reuses.append(f"block {self.block} {self.component}")
                state.stats.empty_cache_recomputes += 1
            else:
                state.stats.reused += 1
                output = self._restore(output)
        else:
            if not plan.keep[s]:
                self._set(None)
            return self._placeholder(x)
        if output is None:
            output = self._original(*args, **kwargs)
            state.stats.computed += 1
            if plan.keep[s]:
                self._store(output)
        elif not plan.keep[s]:
            self._set(None)
        return output


class ScheduleStepHook:
    """Counts the transformer's calls as denoising steps and applies TGATE's CFG drop."""

    name = SCHEDULE_STEP_HOOK

    def __init__(self, state: _RunState, config: ScheduleCacheConfig):
        self.state = state
        self.config = config
        self.gate = config.schedule.tgate_gate_step
        self._module: torch.nn.Module | None = None
        self._original: Callable | None = None
        self._signature: inspect.Signature | None = None

    def attach(self, transformer: torch.nn.Module) -> None:
        """Wrap the transformer's forward."""
        self._module = transformer
        self._original = transformer.forward
        self._signature = inspect.signature(self._original)
        self._undo = _wrap_attribute(transformer, "forward",
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
                    f"schedule {self.config.schedule.name}: the transformer was called twice at timestep {t}; "
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
        if self.config.cfg is not None:
            return self.config.cfg
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
                f"schedule {self.config.schedule.name}: step {step}: {len(state.empty_reuses)} sub-layer(s) asked "
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
        return _tree_map_output(lambda t: torch.cat([t, t]), out)


def _tree_map_output(fn, out):
    if isinstance(out, (tuple, list)):
        return type(out)(fn(v) if isinstance(v, torch.Tensor) else v for v in out)
    if hasattr(out, "sample"):
        return type(out)(sample=fn(out.sample))
    return fn(out)


class ScheduleCacheHandle:
    """An applied schedule: `remove()` restores the stock model; `stats` says what it did."""

    def __init__(self, transformer, state: _RunState, step_hook: ScheduleStepHook, scheduler=None):
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
    state = _RunState(num_steps=schedule.num_inference_steps)
    tgate_blocks = schedule.tgate_blocks()
    family = family_of_config(dict(transformer.config))
    for (block, comp), module in family.sublayer_modules(transformer).items():
        hook = SubLayerCacheHook(state, block, comp, schedule, config.cache_dtype,
                                 tgate=comp == family.cross_attention and block in tgate_blocks)
        hook.attach(module)
        state.sublayers.append(hook)
    step_hook = ScheduleStepHook(state, config)
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
        if config.check_steps and count != n:
            raise UserError(
                f"schedule {config.schedule.name}: covers {n} steps but the pipeline runs {count}; "
                f"use num_inference_steps={n}"
            )
        return result

    return _wrap_attribute(scheduler, "set_timesteps", set_timesteps)


def apply_schedule(target, schedule: Schedule, cache_dtype: torch.dtype | None = None,
                   cfg: bool | None = None) -> ScheduleCacheHandle:
    """Apply `schedule` to a pipeline (uses its `.transformer` and `.scheduler`) or a transformer."""
    config = ScheduleCacheConfig(schedule=schedule, cache_dtype=cache_dtype, cfg=cfg)
    transformer = getattr(target, "transformer", None)
    if transformer is not None:
        return apply_schedule_cache(transformer, config, scheduler=getattr(target, "scheduler", None))
    return apply_schedule_cache(target, config)
