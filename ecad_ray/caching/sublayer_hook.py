"""The per-sub-layer cache: one hook on each cached module's forward.

It replaces the module's output by the cached one when the schedule says `false` at the
current step (read from the shared `RunState`). Because the hook sits on the sub-layer, what is
cached is its output *before* the block applies its adaLN gate and residual add, which the
block keeps computing every step, as ECAD defines. Each cached output lives only while a later
step reuses it (`liveness.plan_sublayer`); an output nothing consumes is not computed at all.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from ecad_ray.caching.liveness import plan_sublayer
from ecad_ray.caching.patching import wrap_attribute
from ecad_ray.caching.run_state import RunState
from ecad_ray.caching.schedule import Schedule
from ecad_ray.caching.tensor_tree import nbytes, tree_map, tree_tensors


class SubLayerCacheHook:
    """Serves one sub-layer's output from the cache on the steps the schedule says `false`."""

    def __init__(self, state: RunState, block: str, component: str, schedule: Schedule,
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
        self._undo = wrap_attribute(module, "forward",
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
        stats.current_bytes += nbytes(value) - nbytes(self.cached)
        stats.peak_bytes = max(stats.peak_bytes, stats.current_bytes)
        self.cached = value

    def _store(self, output: Any) -> None:
        self.cached_dtypes = [t.dtype for t in tree_tensors(output)]
        if self.cache_dtype is None:
            self._set(tree_map(torch.Tensor.detach, output))
        else:
            self._set(tree_map(lambda t: t.detach().to(self.cache_dtype), output))

    def _restore(self, value: Any) -> Any:
        if self.cache_dtype is None:
            return value
        dtypes = iter(self.cached_dtypes)
        return tree_map(lambda t: t.to(next(dtypes)), value)

    def _lookup(self, batch: int) -> Any:
        """The cached output fitted to `batch`, or None when nothing usable is cached."""
        if self.cached is None:
            return None
        held = tree_tensors(self.cached)[0].shape[0]
        if held == batch:
            return self.cached
        if self.state.halved and held == 2 * batch:
            if self.tgate:  # TGATE: cross-attention of both CFG halves, averaged
                reduced = tree_map(lambda t: (t[:batch] + t[batch:]) / 2, self.cached)
            else:  # the run continues the conditional half only
                reduced = tree_map(lambda t: t[batch:], self.cached)
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
                state.count_empty_reuse(self.block, self.component)
            if not plan.runs(s):  # nothing consumes it, now or later
                state.stats.skipped_unconsumed += 1
                return self._placeholder(x)
        elif plan.consumed[s]:
            output = self._lookup(x.shape[0])
            if output is None:  # e.g. the batch size changed mid-run
                state.count_empty_reuse(self.block, self.component)
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
