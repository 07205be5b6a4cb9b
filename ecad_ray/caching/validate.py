"""Check a schedule against the model it will drive, naming the file and key path of each problem.

ECAD's own code never checked this: a 28-block schedule on a 19-block model, or a typo in a
component name, silently ran uncached. Here every mismatch is a `UserError` such as
`schedules/x.json: step "003" block "12": unknown component "attn3"`.
"""

from __future__ import annotations

from ecad_ray.caching.schedule import CUSTOM_PREFIX, KNOWN_CUSTOM_COMPUTES, TGATE, Schedule, step_key
from ecad_ray.caching.spec import TransformerSpec, resolve_spec, spec_from_transformer
from ecad_ray.errors import UserError


def as_spec(target) -> TransformerSpec:
    """Accept a spec, a `--model` name, a pipeline (has `.transformer`) or a transformer."""
    if isinstance(target, TransformerSpec):
        return target
    if isinstance(target, str):
        return resolve_spec(target)
    transformer = getattr(target, "transformer", None) or target
    if not hasattr(transformer, "config"):
        raise TypeError(f"cannot read a transformer spec from {type(target).__name__}")
    return spec_from_transformer(transformer)


def schedule_problems(schedule: Schedule, spec: TransformerSpec) -> tuple[list[str], list[str]]:
    """(errors, warnings) of `schedule` for `spec`; each message starts with its key path."""
    errors: list[str] = []
    warnings: list[str] = []
    if schedule.family != spec.family:
        errors.append(f"cache_schedule: a {schedule.family} schedule cannot drive a {spec.family} model")
        return errors, warnings
    if schedule.num_blocks != spec.num_blocks:
        errors.append(f"cache_schedule.num_blocks: {schedule.num_blocks}, but the model has {spec.num_blocks} blocks")
    if schedule.num_single_blocks != spec.schedule_num_single_blocks:
        errors.append(
            f"cache_schedule.num_single_blocks: {schedule.num_single_blocks}, "
            f"but the model has {spec.num_single_blocks} single blocks"
        )
    n = schedule.num_inference_steps
    present = {int(k): k for k in schedule.steps}
    for s in range(n):
        if s not in present:
            errors.append(f'step "{step_key(s)}": missing (num_inference_steps is {n})')
    extra = sorted(k for k in present if k >= n)
    if extra:
        warnings.append(
            f'steps "{present[extra[0]]}".."{present[extra[-1]]}": beyond num_inference_steps {n}, ignored'
        )
    wanted = spec.block_names
    for s in range(n):
        if s not in present:
            continue
        skey = present[s]
        blocks = schedule.steps[skey]
        for block in wanted:
            if block not in blocks:
                errors.append(f'step "{skey}" block "{block}": missing')
        for block, entry in blocks.items():
            where = f'step "{skey}" block "{block}"'
            if block not in wanted:
                errors.append(f"{where}: unknown block (model blocks: {_range_text(spec)})")
                continue
            allowed = spec.components_of(block)
            for comp in allowed:
                if comp not in entry:
                    errors.append(f'{where}: missing component "{comp}"')
            for comp, value in entry.items():
                if comp.startswith(CUSTOM_PREFIX):
                    errors.extend(_custom_problems(where, comp, value, spec, n))
                elif comp not in allowed:
                    errors.append(f'{where}: unknown component "{comp}" (expected {", ".join(allowed)})')
    return errors, warnings


def _custom_problems(where: str, key: str, value: dict, spec: TransformerSpec, n: int) -> list[str]:
    name = value.get("name")
    if name not in KNOWN_CUSTOM_COMPUTES:
        return [f'{where} "{key}": unknown custom compute "{name}" (known: {", ".join(KNOWN_CUSTOM_COMPUTES)})']
    if name == TGATE:
        if not spec.model_family.supports_tgate:
            return [f'{where} "{key}": {TGATE} needs PixArt cross-attention']
        gate = (value.get("kwargs") or {}).get("gate_step")
        if not isinstance(gate, int) or isinstance(gate, bool) or not 1 <= gate <= n:
            return [f'{where} "{key}".kwargs.gate_step: expected an integer in 1..{n}, got {gate!r}']
    return []


def _range_text(spec: TransformerSpec) -> str:
    """`"0".."27"`, and for FLUX `, "single_0".."single_37"`: the first and last of each block kind."""
    blocks, n = spec.block_names, spec.num_blocks
    return ", ".join(f'"{kind[0]}".."{kind[-1]}"' for kind in (blocks[:n], blocks[n:]) if kind)


def validate_schedule(schedule: Schedule, target, source: str = "") -> list[str]:
    """Raise a one-line `UserError` naming the first problem; return the warnings otherwise.

    `target` is a `TransformerSpec`, a `--model` name, a pipeline or a transformer.
    """
    spec = as_spec(target)
    errors, warnings = schedule_problems(schedule, spec)
    gate = schedule.tgate_gate_step
    if gate is not None and not 1 <= gate <= schedule.num_inference_steps:
        errors.append(f"config.pipeline.kwargs.gate_step: {gate} is outside 1..{schedule.num_inference_steps}")
    if errors:
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        prefix = f"{source}: " if source else ""
        raise UserError(f"{prefix}{errors[0]}{more}")
    return warnings
