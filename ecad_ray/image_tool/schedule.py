"""ECAD caching schedules for `ecad-ray image`: read and check one against the loaded DiT.

The caching itself lives in `ecad_ray.caching` (hooks on the transformer's sub-layers); this
module only loads the file, checks it fits the model, and names the step count it was made
for, so the image tool can default `--steps` to it and refuse a mismatch up front.
"""

from __future__ import annotations

from pathlib import Path

from ecad_ray.errors import UserError


def load_checked_schedule(pipe, path: Path) -> tuple[object, list[str]]:
    """The schedule in `path` and its validation warnings, or a one-line `UserError`."""
    if getattr(pipe, "transformer", None) is None:
        raise UserError(
            f"--schedule {path}: caching schedules apply to diffusion transformers; "
            f"{type(pipe).__name__} has none (UNet models cannot be cached this way)"
        )
    from ecad_ray.caching import load_schedule, validate_schedule

    schedule = load_schedule(path)
    warnings = validate_schedule(schedule, pipe.transformer, source=str(path))
    return schedule, list(warnings or [])


def attach_schedule(pipe, schedule):
    """Hook the schedule into the pipeline's transformer; the handle reports what was reused."""
    from ecad_ray.caching import apply_schedule

    return apply_schedule(pipe, schedule)
