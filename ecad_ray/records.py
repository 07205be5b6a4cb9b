"""Image files and result rows of a run: names, atomic PNG writes, and the results table.

Image names follow ECAD's convention with the prompt id and seed in the name:
`<index:03d>__prompt_id:<id>__image_seed:<seed:03d>.png`. Each PNG also carries its result row
as JSON in a text chunk, so a run interrupted before its table was written can be resumed and
its table rebuilt from the images alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, PngImagePlugin

from ecad_ray.atomic import atomic_path, write_table_atomic
from ecad_ray.prompts import safe_id

PNG_KEY = "ecad-ray"
RESULTS_FILE = "results.parquet"  # every run's table: `generate` and `var generate` alike
RESULTS_SCHEMA = pa.schema(
    [
        ("prompt_index", pa.int64()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("partition", pa.string()),
        ("seed", pa.int64()),
        ("model", pa.string()),
        ("schedule", pa.string()),  # ECAD caching schedule; "none" = uncached (every VAR run)
        ("pruning", pa.string()),  # VAR per-scale pruning (the controller); "none" = unpruned (every DiT run)
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("steps", pa.int64()),
        ("guidance_scale", pa.float64()),
        ("image_path", pa.string()),  # relative to the run folder
        ("seconds_per_image", pa.float64()),  # generation time per image (batch time / batch size)
        ("macs", pa.float64()),  # transformer MACs of this image when it varies per image (VAR); else run.json's
    ]
)


def image_name(prompt_index: int, prompt_id: str, seed: int) -> str:
    """The file name of one image (ECAD's naming, made safe for any prompt id)."""
    return f"{prompt_index:03d}__prompt_id:{safe_id(prompt_id)}__image_seed:{seed:03d}.png"


def write_png(image_HW3: np.ndarray, path: Path, record: dict) -> None:
    """Save a PNG atomically, with its result row embedded as JSON."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(record, sort_keys=True))
    with atomic_path(path) as tmp:
        Image.fromarray(image_HW3).save(tmp, format="PNG", pnginfo=info)


def read_png_record(path: Path) -> dict | None:
    """The result row embedded in an ecad-ray PNG, or None for foreign/unreadable files."""
    try:
        with Image.open(path) as img:
            text = img.text.get(PNG_KEY)  # type: ignore[attr-defined]
    except (OSError, SyntaxError):
        return None
    return renamed_legacy(json.loads(text)) if text else None


LEGACY_NAMES = {"seconds": "seconds_per_image"}  # column names of runs written before the rename


def current_name(name: str) -> str:
    """Today's name of a results column (an older run may have written its former name)."""
    return LEGACY_NAMES.get(name, name)


def renamed_legacy(row: dict) -> dict:
    """A result row (or column dict) from an older run, with today's column names."""
    return {current_name(k): v for k, v in row.items()}


NOT_APPLIED = "none"  # the schedule of an uncached run, the pruning of an unpruned one
_DEFAULTS = {"schedule": NOT_APPLIED, "pruning": NOT_APPLIED, "partition": ""}


def results_table(rows: list[dict]) -> pa.Table:
    """Rows -> the results table, sorted by prompt then seed, with the fixed schema.

    One schema for `generate` (DiT) and `var generate` runs, so the metrics, the report and
    `demo score` read both the same way: a row without a schedule or pruning gets "none"."""
    rows = sorted(rows, key=lambda r: (r["prompt_index"], r["seed"]))
    filled = [{k: r.get(k) if r.get(k) is not None else _DEFAULTS.get(k) for k in RESULTS_SCHEMA.names} for r in rows]
    return pa.Table.from_pylist(filled, schema=RESULTS_SCHEMA)


def write_results(rows: list[dict], path: Path) -> pa.Table:
    """Write results.parquet atomically."""
    table = results_table(rows)
    write_table_atomic(table, path)
    return table


def setting_label(schedule: str, pruning: str) -> str:
    """How tables and plots name what a run changed: its schedule (DiT), its pruning (VAR), both
    joined by " + " when both apply, "none" for the untouched reference."""
    applied = [name for name in (schedule, pruning) if name != NOT_APPLIED]
    return " + ".join(applied) or NOT_APPLIED
