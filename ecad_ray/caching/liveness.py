"""How long each cached sub-layer output must live, and what that costs in memory.

A sub-layer's output computed at step s is needed later only at the steps of the reuse chain
that follows s (s+1, s+2, ... up to the next compute) where something *consumes* it. In
PixArt and in FLUX double blocks every output is consumed every step (it is added to the
residual stream). In a FLUX single block, `single_attn` and `single_proj_mlp` feed only
`single_proj_out`: on a step where `single_proj_out` reuses its cache they are not consumed,
so they need not be held for that step nor, when nothing later consumes them, computed at
all. The cache holds an output only up to its last consuming step; ECAD's implementation
keeps every sub-layer's last output for the whole run. Skipping an unconsumed computation
changes nothing in the result (tests compare against a naive oracle that computes them).

The hooks follow the event order simulated here (steps; blocks and sub-layers in run order),
so the analytic peak equals the measured one. What liveness saves depends on the schedule:
where a step reuses every sub-layer (ECAD's searched PixArt schedules do at step 1), all that
the step before computed must be held, and the PixArt peak equals ECAD's; the saving then
shows in bytes held on average, in TGATE-like schedules and, for FLUX, in the single blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecad_ray.caching.schedule import Schedule
from ecad_ray.caching.spec import TransformerSpec
from ecad_ray.models.families import family_named


def recompute_flags(schedule: Schedule, block: str, component: str) -> tuple[bool, ...]:
    """Per step: True when computed. Step 0 always computes (a reuse there finds nothing)."""
    return tuple(s == 0 or schedule.recompute(s, block, component) for s in range(schedule.num_inference_steps))


@dataclass(frozen=True)
class SubLayerPlan:
    """What one sub-layer does at each step of a run."""

    compute: tuple[bool, ...]  # the schedule computes it (step 0 forced)
    consumed: tuple[bool, ...]  # its output is used at this step
    keep: tuple[bool, ...]  # its output must be held after this step (a later step consumes it)

    def runs(self, step: int) -> bool:
        """The module really runs: scheduled, and its output is used now or later."""
        return self.compute[step] and (self.consumed[step] or self.keep[step])


def plan_sublayer(schedule: Schedule, block: str, component: str) -> SubLayerPlan:
    """The compute / consume / keep flags of one sub-layer over the run."""
    compute = recompute_flags(schedule, block, component)
    n = len(compute)
    consumer = family_named(schedule.family).consumer_of(component)
    consumed = recompute_flags(schedule, block, consumer) if consumer else (True,) * n
    keep = []
    for s in range(n):
        u, needed = s + 1, False
        while u < n and not compute[u]:  # the reuse chain that follows step s
            needed = needed or consumed[u]
            u += 1
        keep.append(needed)
    return SubLayerPlan(compute=compute, consumed=consumed, keep=tuple(keep))


def output_elements(spec: TransformerSpec, component: str) -> int:
    """Elements of one sample's output of `component` (what a cache entry holds per sample)."""
    return spec.model_family.output_elements(spec, component)


@dataclass(frozen=True)
class MemoryReport:
    """Peak bytes of cached sub-layer outputs, ours (liveness) vs ECAD's keep-every-last-output."""

    peak_bytes: int
    keep_all_bytes: int
    mean_bytes: float  # bytes held at the end of a step, averaged over steps (ECAD's: keep_all_bytes)
    batch: int  # samples per transformer call before any TGATE gate (2 x prompts with CFG)
    bytes_per_element: int

    @property
    def ratio(self) -> float:
        """Our peak as a fraction of keeping everything."""
        return self.peak_bytes / self.keep_all_bytes if self.keep_all_bytes else 0.0


def cache_memory(
    schedule: Schedule, spec: TransformerSpec, batch: int, bytes_per_element: int, cfg: bool = True
) -> MemoryReport:
    """Simulate the hooks' cache on `schedule` and report peak bytes for a `batch`-sample call.

    With `cfg` and a TGATE schedule, steps from the gate step on run half the batch, and a
    reused TGATE cross-attention entry shrinks to the average of its two halves.
    """
    gate = schedule.tgate_gate_step if cfg else None
    order = [(b, c) for b in spec.block_names for c in spec.components_of(b)]
    plans = {key: plan_sublayer(schedule, *key) for key in order}
    held: dict[tuple[str, str], int] = {}
    current = peak = 0
    held_at_step_end = []
    for s in range(schedule.num_inference_steps):
        k = batch // 2 if gate is not None and s >= gate else batch
        for key in order:
            plan = plans[key]
            # a held entry has this step's batch once consumed (a TGATE reuse halves it)
            size = output_elements(spec, key[1]) * k * bytes_per_element
            if plan.compute[s]:
                current -= held.pop(key, 0)
                if plan.keep[s]:
                    held[key] = size
                    current += size
            else:
                if plan.consumed[s] and key in held:
                    current += size - held[key]
                    held[key] = size
                if not plan.keep[s]:
                    current -= held.pop(key, 0)
            peak = max(peak, current)
        held_at_step_end.append(current)
    keep_all = sum(output_elements(spec, c) for _, c in order) * batch * bytes_per_element
    return MemoryReport(peak_bytes=peak, keep_all_bytes=keep_all, mean_bytes=sum(held_at_step_end) / len(held_at_step_end),
                        batch=batch, bytes_per_element=bytes_per_element)
