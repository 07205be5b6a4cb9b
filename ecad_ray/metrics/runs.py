"""Reading a generate run directory: its per-image results table and images.

A run directory holds `images/*.png`, `results.parquet` (one row per image: prompt_id,
prompt, seed, model, schedule, height, width, steps, guidance_scale, image_path, seconds;
optionally partition and macs) and `run.json`. Image paths are relative to the run
directory (absolute paths are accepted too).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecad_ray.errors import UserError
from ecad_ray.metrics.fid import load_rgb

RESULTS = "results.parquet"
REQUIRED_COLUMNS = ("prompt_id", "prompt", "seed", "model", "schedule", "image_path")
# Names the all-recompute (uncached) schedule goes by, tried in order when none is given.
REFERENCE_SCHEDULE_NAMES = ("baseline", "all-recompute", "none", "no-cache", "uncached", "default", "full")


def results_file(run_dir: Path, option: str = "RUN_DIR") -> pq.ParquetFile:
    """The run's `results.parquet`, checked for the columns metrics need."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        raise UserError(f"{option} {run_dir}: no {RESULTS} (not a generate run directory?)")
    file = pq.ParquetFile(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in file.schema_arrow.names]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    return file


def iter_result_batches(run_dir: Path, batch_size: int) -> Iterator[dict]:
    """Stream the results table as column dicts of `batch_size` rows, each with its `image` loaded."""
    run_dir = Path(run_dir)
    for record_batch in results_file(run_dir).iter_batches(batch_size=batch_size):
        batch = record_batch.to_pydict()
        batch["image"] = [load_rgb(resolve_image(run_dir, p)) for p in batch["image_path"]]
        yield batch


def resolve_image(run_dir: Path, image_path: str) -> Path:
    """An image path from a results table, made absolute against its run directory."""
    path = Path(image_path)
    return path if path.is_absolute() else Path(run_dir) / path


def schedules_of(run_dir: Path) -> list[str]:
    """The distinct schedules in a run, in first-seen order."""
    table = results_file(run_dir).read(columns=["schedule"])
    return list(dict.fromkeys(table.column("schedule").to_pylist()))


def pick_reference_schedule(schedules: Sequence[str], requested: str | None, option: str) -> str:
    """The requested schedule, the only one, or the one named like the all-recompute baseline."""
    if requested is not None:
        if requested not in schedules:
            raise UserError(f"{option} {requested}: no such schedule (have {', '.join(schedules)})")
        return requested
    if len(schedules) == 1:
        return schedules[0]
    for name in REFERENCE_SCHEDULE_NAMES:
        if name in schedules:
            return name
    raise UserError(
        f"{option}: cannot tell which of {', '.join(schedules)} is the all-recompute reference; name it"
    )


class ReferenceImages:
    """Reference images of one run and schedule, looked up by (prompt_id, seed).

    Holds only the paths (a few strings per image); images load when asked for.
    """

    def __init__(self, run_dir: Path, schedule: str | None = None, option: str = "--reference") -> None:
        self.run_dir = Path(run_dir)
        file = results_file(self.run_dir, option)
        self.schedule = pick_reference_schedule(schedules_of(self.run_dir), schedule, "--reference-schedule")
        columns = ["prompt_id", "seed", "image_path", "schedule"]
        extra = [c for c in ("seconds", "model") if c in file.schema_arrow.names]
        table = file.read(columns=columns + extra)
        table = table.filter(pc.equal(table.column("schedule"), self.schedule))
        self.paths = {
            (str(pid), int(seed)): path
            for pid, seed, path in zip(
                table.column("prompt_id").to_pylist(),
                table.column("seed").to_pylist(),
                table.column("image_path").to_pylist(),
            )
        }
        self.seconds_per_image = _mean(table, "seconds")
        self.models = set(table.column("model").to_pylist()) if "model" in extra else set()

    def image(self, prompt_id: str, seed: int) -> np.ndarray | None:
        """The reference image for this prompt and seed, or None when the reference lacks it."""
        path = self.paths.get((str(prompt_id), int(seed)))
        return None if path is None else load_rgb(resolve_image(self.run_dir, path))


def _mean(table: pa.Table, column: str) -> float | None:
    if column not in table.column_names or table.num_rows == 0:
        return None
    value = pc.mean(table.column(column)).as_py()
    return None if value is None else float(value)
