"""How long each cached sub-layer output must live, and what that costs in memory.

A sub-layer's output is needed after step s only when step s+1 reuses it; a chain of reuses
keeps the output of the last compute alive until the chain ends, then it is dropped. ECAD's
implementation instead keeps every sub-layer's last output for the whole run. The same event
order (steps, blocks in run order, sub-layers in run order) is simulated here analytically
and followed by the hooks, so the analytic peak equals the measured one.

What liveness can save depends on the schedule: when some step reuses every sub-layer (ECAD's
searched schedules do at step 1), everything computed at the step before must be held, and
the peak equals ECAD's. The saving then shows in bytes held on average over the run, in
schedules like TGATE (only cross-attention is held), and in the all-recompute default (zero).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecad_ray.caching.schedule import Schedule
from ecad_ray.caching.spec import TransformerSpec


def recompute_flags(schedule: Schedule, block: str, component: str) -> tuple[bool, ...]:
    """Per step: True when the sub-layer is computed, False when it reuses its cache."""
    return tuple(schedule.recompute(s, block, component) for s in range(schedule.num_inference_steps))


def keep_flags(recompute: tuple[bool, ...]) -> tuple[bool, ...]:
    """Per step: True when the output held after this step is reused by the next step."""
    n = len(recompute)
    return tuple(s + 1 < n and not recompute[s + 1] for s in range(n))


def output_elements(spec: TransformerSpec, component: str) -> int:
    """Elements of one sample's output of `component` (what a cache entry holds per sample)."""
    d, n, t = spec.hidden, spec.image_tokens, spec.text_len
    seq = n + t
    sizes = {
        "attn1": n * d,
        "attn2": n * d,
        "ff": n * d,
        "full_attn": seq * d,  # image and text attention outputs
        "full_ff": n * d,
        "full_ff_context": t * d,
        "single_attn": seq * d,
        "single_proj_mlp": seq * spec.ff_mult * d,
        "single_proj_out": seq * d,
    }
    return sizes[component]


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
    plans = {key: recompute_flags(schedule, *key) for key in order}
    keeps = {key: keep_flags(flags) for key, flags in plans.items()}
    held: dict[tuple[str, str], int] = {}
    current = peak = 0
    held_at_step_end = []
    for s in range(schedule.num_inference_steps):
        k = batch // 2 if gate is not None and s >= gate else batch
        for key in order:
            # computed or reused, the entry now holds this step's batch (a TGATE reuse halves it)
            size = output_elements(spec, key[1]) * k * bytes_per_element
            current -= held.pop(key, 0)
            if keeps[key][s]:
                held[key] = size
                current += size
            peak = max(peak, current)
        held_at_step_end.append(current)
    keep_all = sum(output_elements(spec, c) for _, c in order) * batch * bytes_per_element
    return MemoryReport(peak_bytes=peak, keep_all_bytes=keep_all, mean_bytes=sum(held_at_step_end) / len(held_at_step_end),
                        batch=batch, bytes_per_element=bytes_per_element)
