"""The search genome: one bit per (step, block, sub-layer) of a model's schedule shape.

ECAD's genome, for any model the caching hooks support: `True` = recompute the sub-layer at
that step, `False` = reuse its cached output. Bits run step by step, blocks in run order,
sub-layers in the family's order (PixArt-α/Σ 20 × 28 × 3 = 1680 bits; FLUX 20 × (19 + 38) × 3
= 3420; the demo 20 × its blocks × 3). The shape comes from the model's `TransformerSpec`, so
a genome and a schedule convert both ways without loss and every decoded schedule validates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecad_ray.caching.baselines import default_schedule
from ecad_ray.caching.schedule import Schedule, make_schedule
from ecad_ray.caching.spec import TransformerSpec
from ecad_ray.caching.validate import validate_schedule


@dataclass(frozen=True)
class GenomeLayout:
    """Which (step, block, sub-layer) each bit of a genome stands for."""

    spec: TransformerSpec
    steps: int

    @property
    def positions(self) -> list[tuple[int, str, str]]:
        return [(s, b, c) for s in range(self.steps) for b in self.spec.block_names for c in self.spec.components_of(b)]

    @property
    def size(self) -> int:
        per_step = sum(len(self.spec.components_of(b)) for b in self.spec.block_names)
        return self.steps * per_step

    def to_schedule(self, bits: np.ndarray, name: str, attributes: dict | None = None) -> Schedule:
        """The ECAD schedule a genome stands for (validates on `spec` by construction)."""
        bits = np.asarray(bits, dtype=bool)
        if bits.shape != (self.size,):
            raise ValueError(f"genome has {bits.size} bits; this model's schedule shape needs {self.size}")
        it = iter(bits.tolist())
        table = {s: {b: {c: next(it) for c in self.spec.components_of(b)} for b in self.spec.block_names}
                 for s in range(self.steps)}
        return make_schedule(name, table, self.spec.num_blocks, self.steps,
                             num_single_blocks=self.spec.schedule_num_single_blocks, attributes=attributes or {})

    def from_schedule(self, schedule: Schedule, source: str = "") -> np.ndarray:
        """The genome of a schedule; a schedule that does not fit the model is a one-line `UserError`.

        Custom computes (TGATE's CFG averaging) have no bit: only the recompute flags are kept.
        """
        validate_schedule(schedule, self.spec, source=source or f"schedule {schedule.name}")
        if schedule.num_inference_steps != self.steps:
            from ecad_ray.errors import UserError

            raise UserError(f"{source or schedule.name}: {schedule.num_inference_steps} steps, "
                            f"but the search runs {self.steps}")
        return np.array([schedule.recompute(s, b, c) for s, b, c in self.positions], dtype=bool)

    def uncached(self) -> np.ndarray:
        """All bits set: the all-recompute schedule (the reference, infeasible as a candidate)."""
        return self.from_schedule(default_schedule(self.spec, self.steps))


def genome_key(bits: np.ndarray) -> str:
    """A genome as a short stable text (packed bits, hex): how evaluated candidates are found again."""
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes().hex()
