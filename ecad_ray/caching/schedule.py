"""ECAD's caching-schedule file format: read, write, and ask a schedule what to do.

A schedule says, for every denoising step and every transformer block, which sub-layers are
recomputed (`true`) and which reuse the output cached at the last step they were computed
(`false`). The file also carries the generation config and measured metrics; we keep every
section (and unknown keys) so writing a loaded schedule back loses nothing.

    {"cache_schedule": {"num_blocks": 28, "num_inference_steps": 20, "name": "...",
        "attributes": {...}, "num_single_blocks": 38,          # FLUX only
        "schedule": {"000": {"0": {"attn1": true, "attn2": true, "ff": true}, ...}, ...}},
     "config": {...}, "metrics": {...}}
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecad_ray.atomic import write_text_atomic
from ecad_ray.errors import UserError
from ecad_ray.models.families import family_of_schedule

CUSTOM_PREFIX = "custom_compute"  # keys like `custom_compute_attn` hold a {name, kwargs} object
TGATE = "compute_attn_tgate"
KNOWN_CUSTOM_COMPUTES = (TGATE,)


def step_key(step: int) -> str:
    """ECAD's zero-padded step key (`3` -> `"003"`)."""
    return f"{step:03d}"


@dataclass(frozen=True)
class Schedule:
    """One caching schedule as ECAD writes it. Treat the dict fields as read-only.

    `bits[step][block]` is the dict of sub-layer -> recompute flag (plus custom-compute
    entries) for integer step `step` and block key `block` ("0", "single_3", ...).
    """

    name: str
    num_blocks: int
    num_inference_steps: int
    num_single_blocks: int | None  # present (FLUX) or None (PixArt) exactly as in the file
    attributes: dict[str, Any]
    steps: dict[str, dict[str, dict[str, Any]]]  # the `schedule` section, keys as in the file
    config: dict[str, Any] | None = None  # None when the file has no `config` section
    metrics: dict[str, Any] | None = None  # None when the file has no `metrics` section
    extra: dict[str, Any] = field(default_factory=dict)  # unknown top-level keys, kept on save
    header_extra: dict[str, Any] = field(default_factory=dict)  # unknown `cache_schedule` keys

    # ---- asking the schedule -------------------------------------------------------------
    @property
    def family(self) -> str:
        """`flux` when blocks have FLUX component names or single blocks, else `pixart`."""
        first = next((entry for blocks in self.steps.values() for entry in blocks.values()), {})
        return family_of_schedule(self.num_single_blocks, first).name

    def entry(self, step: int, block: str) -> dict[str, Any]:
        """The raw entry of one block at one step (components and custom computes)."""
        return self.steps[step_key(step)][block]

    def recompute(self, step: int, block: str, component: str) -> bool:
        """True when `component` of `block` is computed at `step`; False when it reuses its cache."""
        return bool(self.steps[step_key(step)][block][component])

    def blocks(self) -> list[str]:
        """Block keys in the order of the first step."""
        first = self.steps[min(self.steps, key=int)] if self.steps else {}
        return list(first)

    def components(self, block: str) -> list[str]:
        """Boolean component names of a block (custom computes left out), from the first step."""
        first = self.steps[min(self.steps, key=int)]
        return [k for k, v in first[block].items() if not k.startswith(CUSTOM_PREFIX)]

    def custom_compute(self, block: str, step: int = 0) -> dict[str, Any] | None:
        """The block's `custom_compute_attn` spec ({name, kwargs}) or None."""
        entry = self.entry(step, block)
        for key, value in entry.items():
            if key.startswith(CUSTOM_PREFIX):
                return value
        return None

    @property
    def tgate_gate_step(self) -> int | None:
        """The step from which TGATE drops the CFG batch, or None for a plain schedule.

        Read from `config.pipeline` (name `tgate`) when present, else from the blocks'
        `compute_attn_tgate` kwargs.
        """
        pipeline = (self.config or {}).get("pipeline") or {}
        if pipeline.get("name") == "tgate" and "gate_step" in (pipeline.get("kwargs") or {}):
            return int(pipeline["kwargs"]["gate_step"])
        gates = {
            int(spec["kwargs"]["gate_step"])
            for block in self.blocks()
            if (spec := self.custom_compute(block)) and spec.get("name") == TGATE
        }
        return min(gates) if gates else None

    def tgate_blocks(self) -> set[str]:
        """Blocks whose cross-attention follows TGATE (averaged CFG halves once reused)."""
        return {
            b for b in self.blocks() if (spec := self.custom_compute(b)) and spec.get("name") == TGATE
        }

    def recompute_fraction(self) -> dict[str, float]:
        """Per component name: fraction of (step, block) pairs that recompute it."""
        counts: dict[str, list[int]] = {}
        for s in range(self.num_inference_steps):
            for block, entry in self.steps[step_key(s)].items():
                for comp, flag in entry.items():
                    if comp.startswith(CUSTOM_PREFIX):
                        continue
                    c = counts.setdefault(comp, [0, 0])
                    c[0] += bool(flag)
                    c[1] += 1
        return {k: v[0] / v[1] for k, v in counts.items()}

    # ---- serialising ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The schedule as ECAD's JSON object (a deep copy)."""
        header: dict[str, Any] = {
            "num_blocks": self.num_blocks,
            "num_inference_steps": self.num_inference_steps,
            "name": self.name,
            "attributes": self.attributes,
        }
        if self.num_single_blocks is not None:
            header["num_single_blocks"] = self.num_single_blocks
        header.update(self.header_extra)
        header["schedule"] = self.steps
        out: dict[str, Any] = {"cache_schedule": header}
        if self.config is not None:
            out["config"] = self.config
        if self.metrics is not None:
            out["metrics"] = self.metrics
        out.update(self.extra)
        return copy.deepcopy(out)


_HEADER_KEYS = ("num_blocks", "num_inference_steps", "name", "attributes", "num_single_blocks", "schedule")


def _fail(source: str, where: str, what: str) -> UserError:
    prefix = f"{source}: " if source else ""
    return UserError(f"{prefix}{where}: {what}")


def schedule_from_json(data: Any, source: str = "") -> Schedule:
    """Parse ECAD's JSON object, checking its structure (not the model fit; see validate)."""
    if not isinstance(data, dict) or not isinstance(data.get("cache_schedule"), dict):
        raise _fail(source, "top level", 'expected an object with a "cache_schedule" object')
    head = data["cache_schedule"]
    for key in ("num_blocks", "num_inference_steps"):
        if not isinstance(head.get(key), int) or isinstance(head.get(key), bool) or head[key] < 1:
            raise _fail(source, f"cache_schedule.{key}", f"expected a positive integer, got {head.get(key)!r}")
    singles = head.get("num_single_blocks")
    if singles is not None and (not isinstance(singles, int) or singles < 0):
        raise _fail(source, "cache_schedule.num_single_blocks", f"expected an integer >= 0, got {singles!r}")
    steps = head.get("schedule")
    if not isinstance(steps, dict) or not steps:
        raise _fail(source, "cache_schedule.schedule", "expected a non-empty object of steps")
    for skey, blocks in steps.items():
        if not skey.isdigit():
            raise _fail(source, f'step "{skey}"', "step keys must be zero-padded integers like \"003\"")
        if not isinstance(blocks, dict):
            raise _fail(source, f'step "{skey}"', "expected an object of blocks")
        for bkey, entry in blocks.items():
            where = f'step "{skey}" block "{bkey}"'
            if not isinstance(entry, dict):
                raise _fail(source, where, "expected an object of components")
            for comp, flag in entry.items():
                if comp.startswith(CUSTOM_PREFIX):
                    if not (isinstance(flag, dict) and isinstance(flag.get("name"), str)
                            and isinstance(flag.get("kwargs", {}), dict)):
                        raise _fail(source, f'{where} "{comp}"', 'expected {"name": str, "kwargs": {...}}')
                elif not isinstance(flag, bool):
                    raise _fail(source, f'{where} component "{comp}"', f"expected true or false, got {flag!r}")
    for key in ("config", "metrics"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise _fail(source, key, "expected an object")
    attributes = head.get("attributes", {})
    return Schedule(
        name=str(head.get("name", "")),
        num_blocks=head["num_blocks"],
        num_inference_steps=head["num_inference_steps"],
        num_single_blocks=singles,
        attributes=copy.deepcopy(attributes if isinstance(attributes, dict) else {}),
        steps=copy.deepcopy(steps),
        config=copy.deepcopy(data["config"]) if "config" in data else None,
        metrics=copy.deepcopy(data["metrics"]) if "metrics" in data else None,
        extra={k: copy.deepcopy(v) for k, v in data.items() if k not in ("cache_schedule", "config", "metrics")},
        header_extra={k: copy.deepcopy(v) for k, v in head.items() if k not in _HEADER_KEYS},
    )


def load_schedule(path: str | os.PathLike) -> Schedule:
    """Read an ECAD schedule file; a missing file or bad JSON becomes a one-line `UserError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"{path}: cannot read schedule ({err.strerror or err})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    return schedule_from_json(data, source=str(path))


def save_schedule(schedule: Schedule, path: str | os.PathLike) -> Path:
    """Write `schedule` in ECAD's format atomically (temp file + rename)."""
    path = Path(path)
    write_text_atomic(path, json.dumps(schedule.to_json(), indent=2) + "\n")
    return path


def make_schedule(
    name: str,
    bits: dict[int, dict[str, dict[str, bool]]],
    num_blocks: int,
    num_inference_steps: int,
    num_single_blocks: int | None = None,
    attributes: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    custom: dict[str, dict[str, Any]] | None = None,
) -> Schedule:
    """Build a schedule from integer-step bits; `custom` adds a custom compute entry per block."""
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    for s in range(num_inference_steps):
        steps[step_key(s)] = {}
        for block, comps in bits[s].items():
            entry: dict[str, Any] = dict(comps)
            if custom and block in custom:
                entry["custom_compute_attn"] = copy.deepcopy(custom[block])
            steps[step_key(s)][block] = entry
    return Schedule(
        name=name,
        num_blocks=num_blocks,
        num_inference_steps=num_inference_steps,
        num_single_blocks=num_single_blocks,
        attributes=dict(attributes or {}),
        steps=steps,
        config=config if config is not None else {},
        metrics=None,
    )
