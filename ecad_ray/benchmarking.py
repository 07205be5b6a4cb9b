"""Helpers for `ecad-ray benchmark`: which schedules to run, in which order, and the joint table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ecad_ray.atomic import write_table_atomic
from ecad_ray.errors import UserError


def schedule_files(schedule_dir: str | Path) -> list[Path]:
    """Every schedule JSON under `schedule_dir`, all-recompute ones first (they are the reference).

    Each file is loaded (and so checked) before any image is generated.
    """
    from ecad_ray.caching import load_schedule

    folder = Path(schedule_dir)
    if not folder.is_dir():
        raise UserError(f"--schedule-dir {folder}: no such folder")
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise UserError(f"--schedule-dir {folder}: holds no .json schedules")
    stems = [f.stem for f in files]
    dup = next((s for s in stems if stems.count(s) > 1), None)
    if dup:
        raise UserError(f"--schedule-dir {folder}: two schedules are named {dup!r}; output folders need unique names")

    def is_full(path: Path) -> bool:
        schedule = load_schedule(path)
        return schedule.tgate_gate_step is None and all(v == 1.0 for v in schedule.recompute_fraction().values())

    full = {f for f in files if is_full(f)}
    return [f for f in files if f in full] + [f for f in files if f not in full]


def combine_results(paths: list[Path], out: Path) -> pa.Table:
    """Concatenate per-schedule results tables (image paths made relative to `out`'s folder)."""
    tables = []
    for path in paths:
        table = pq.read_table(path)
        prefix = path.parent.relative_to(out.parent).as_posix()
        images = [f"{prefix}/{p}" for p in table.column("image_path").to_pylist()]
        tables.append(table.set_column(table.schema.get_field_index("image_path"), "image_path", pa.array(images)))
    combined = pa.concat_tables(tables)
    write_table_atomic(combined, out)
    return combined
