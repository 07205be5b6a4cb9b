"""What the hooks of one applied schedule share: the step being run, the CFG state, the stats.

The step hook on the transformer advances the step; each sub-layer hook reads it to decide
compute or reuse and adds to the stats. `reset()` starts a new denoising run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ecad_ray.caching.sublayer_hook import SubLayerCacheHook


@dataclass
class CacheStats:
    """What the cache did since it was applied (sums over runs; `peak_bytes` is the max).

    `computed`, `reused` and `peak_bytes` are what a `generate` run records (its results
    table's `cache_*` columns and run.json's `cache`).
    """

    runs: int = 0
    computed: int = 0  # sub-layer calls that ran the module
    reused: int = 0  # sub-layer calls served from the cache
    empty_cache_recomputes: int = 0  # reuses that found nothing cached and recomputed
    skipped_unconsumed: int = 0  # scheduled computes skipped because nothing ever used the output
    current_bytes: int = 0
    peak_bytes: int = 0  # the largest total held by the cache at any moment


@dataclass
class RunState:
    """State shared by every hook of one applied schedule; `reset()` starts a new run."""

    num_steps: int
    step: int | None = None  # step of the transformer call in progress, None outside calls
    next_step: int = 0
    last_timestep: float | None = None
    cfg_active: bool = False  # the run's batch is a CFG pair
    halved: bool = False  # this call runs only the cond half (TGATE after the gate)
    empty_reuses: list[str] = field(default_factory=list)
    stats: CacheStats = field(default_factory=CacheStats)
    sublayers: list[SubLayerCacheHook] = field(default_factory=list)

    def reset(self) -> None:
        """Forget every cached output and start counting steps from 0."""
        for hook in self.sublayers:
            hook.reset()
        self.next_step = 0
        self.last_timestep = None
        self.step = None
        self.halved = False

    def count_empty_reuse(self, block: str, component: str) -> None:
        """A sub-layer asked to reuse with nothing usable cached, and recomputes (warned per step)."""
        self.empty_reuses.append(f"block {block} {component}")
        self.stats.empty_cache_recomputes += 1
