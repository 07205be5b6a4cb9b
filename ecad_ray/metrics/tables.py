"""The two metric tables and their fixed Arrow schemas.

`metrics.parquet`: one row per image (`METRICS_SCHEMA`). `summary.parquet`: one row per
model, setting and partition (`SUMMARY_SCHEMA`; partition "" is the whole setting, others
are COCO megabatches / MJHQ categories when the run has them). A setting is the pair
(schedule, pruning): DiT runs have pruning "none", VAR runs schedule "none", so both kinds of
run share the tables and one summary can hold both. Every column is always there
(null when its metric was not asked for or failed), so tables from different runs concatenate
and readers never guess. Each field's description is stored in the schema metadata.

`MetricsTableWriter` takes scored batches as a stream (from a metrics pass or from the Ray
plan's `MetricsStage`), appends rows to `metrics.parquet` through a temp file, folds FID
features into per-setting statistics, and writes `summary.parquet` when closed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecad_ray.metrics.fid import ALL, FeatureStats, ReferenceStats
from ecad_ray.metrics.suite import ERROR_COLUMN, FEATURES_COLUMN, METRIC_COLUMNS
from ecad_ray.records import NOT_APPLIED

METRICS_FILE = "metrics.parquet"
SUMMARY_FILE = "summary.parquet"
QUALITY_COLUMNS = tuple(METRIC_COLUMNS.values())  # clip_score, imagereward, psnr, ssim, lpips


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


METRICS_SCHEMA = pa.schema(
    [
        _field("model", pa.string(), "model name as given to generate (registry name, hub id or folder)", False),
        _field("schedule", pa.string(), "ECAD caching schedule name; 'none' = uncached (every VAR run)", False),
        _field("pruning", pa.string(), "VAR per-scale pruning (controller) name; 'none' = unpruned (every DiT run)", False),
        _field("prompt_id", pa.string(), "stable prompt id from the prompt source", False),
        _field("seed", pa.int64(), "noise seed of this image", False),
        _field("partition", pa.string(), "COCO megabatch / MJHQ or Parti category, '' if none", False),
        _field("prompt", pa.string(), "prompt text"),
        _field("image_path", pa.string(), "image file, relative to the run directory"),
        _field("seconds_per_image", pa.float64(), "generation seconds per image, from results.parquet"),
        _field("macs", pa.float64(), "transformer multiply-accumulates per image (DiT: the model's own text length; "
                                     "VAR: the scales as pruned, CFG rows included), when recorded"),
        _field("clip_score", pa.float64(), "100 * max(cos(CLIP image, CLIP text), 0); higher is better"),
        _field("imagereward", pa.float64(), "ImageReward v1.0 score; higher is better"),
        _field("psnr", pa.float64(), "PSNR in dB vs the reference image (inf = identical); higher is better"),
        _field("ssim", pa.float64(), "SSIM vs the reference image (1 = identical); higher is better"),
        _field("lpips", pa.float64(), "LPIPS distance vs the reference image (0 = identical); lower is better"),
        _field(ERROR_COLUMN, pa.string(), "why a metric is null for this row (null when none failed)"),
    ]
)

_STAT_FIELDS = []
for _col in QUALITY_COLUMNS:
    _over = " (finite values: identical images give inf)" if _col == "psnr" else ""
    _STAT_FIELDS += [
        _field(f"{_col}_mean", pa.float64(), f"mean {_col} over the group's images{_over}"),
        _field(f"{_col}_std", pa.float64(), f"sample standard deviation of {_col}{_over}"),
    ]

SUMMARY_SCHEMA = pa.schema(
    [
        _field("model", pa.string(), "model name", False),
        _field("schedule", pa.string(), "schedule name ('none' = uncached)", False),
        _field("pruning", pa.string(), "pruning name ('none' = unpruned)", False),
        _field("partition", pa.string(), "'' = every image of the setting; else one megabatch / category", False),
        _field("n_images", pa.int64(), "images in this group", False),
        _field("n_errors", pa.int64(), "images with at least one failed metric", False),
        *_STAT_FIELDS,
        _field("fid", pa.float64(), "FID vs --fid-ref statistics, else vs the reference setting's images; null if neither"),
        _field("macs", pa.float64(), "mean MACs per image, when recorded"),
        _field("seconds_per_image", pa.float64(), "mean generation seconds per image"),
        _field("speedup", pa.float64(), "reference setting's seconds per image / this setting's"),
        _field("is_reference", pa.bool_(), "this setting is the reference (all-recompute, unpruned)", False),
    ]
)




class MetricsTableWriter:
    """Streams scored batches into `metrics.parquet` and, on `close`, writes `summary.parquet`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, METRICS_SCHEMA)
        self.fid_stats: dict[tuple[str, str, str, str], FeatureStats] = defaultdict(FeatureStats)
        self.rows = 0

    def write(self, batch: dict) -> None:
        """Append one scored batch (columns of the results table plus the suite's columns)."""
        n = len(batch["prompt_id"])
        columns = {}
        for field in METRICS_SCHEMA:
            values = batch.get(field.name)
            if values is None and field.name in ("partition", "pruning"):
                values = ["" if field.name == "partition" else NOT_APPLIED] * n
            columns[field.name] = _arrow_column(values, field.type, n)
        self._writer.write_table(pa.table(columns, schema=METRICS_SCHEMA))
        self.rows += n
        feats = batch.get(FEATURES_COLUMN)
        if feats is not None:
            partitions = batch.get("partition")
            partitions = [""] * n if partitions is None else partitions
            prunings = batch.get("pruning")
            prunings = [NOT_APPLIED] * n if prunings is None else prunings
            for i in range(n):
                key = (str(batch["model"][i]), str(batch["schedule"][i]), str(prunings[i]))
                row = np.asarray(feats[i], dtype=np.float64)[None]
                self.fid_stats[(*key, ALL)].add(row)
                if partitions[i]:
                    self.fid_stats[(*key, str(partitions[i]))].add(row)

    def close(self) -> Path:
        """Finish `metrics.parquet` (atomic rename) and return its path."""
        self._writer.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial table (an interrupted pass leaves no half-written file)."""
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def _arrow_column(values, type_: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, type_)
    if pa.types.is_floating(type_):
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        return pa.array(arr, type=type_, mask=np.isnan(arr))
    if pa.types.is_string(type_):
        return pa.array([None if v is None else str(v) for v in values], type=type_)
    return pa.array(list(values), type=type_)


def summarize(
    metrics_path: Path,
    reference_schedule: str | None,
    fid_stats: dict[tuple[str, str, str, str], FeatureStats] | None = None,
    fid_reference: Callable[[str], ReferenceStats | None] | None = None,
    reference_seconds: float | None = None,
    reference_pruning: str = NOT_APPLIED,
) -> pa.Table:
    """Per model / setting / partition statistics of `metrics.parquet` as a `SUMMARY_SCHEMA` table.

    The reference setting is (`reference_schedule`, `reference_pruning`); None: no reference.
    `fid_reference(model)` gives the FID reference statistics for a model (None: no FID).
    `reference_seconds` is the reference run's seconds per image when the reference is another
    run; otherwise the reference setting of the same model in this run sets the speedup.
    """
    columns = ["model", "schedule", "pruning", "partition", ERROR_COLUMN, "macs", "seconds_per_image", *QUALITY_COLUMNS]
    data = pq.read_table(metrics_path, columns=columns).to_pydict()
    reference = None if reference_schedule is None else (reference_schedule, reference_pruning)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, key in enumerate(zip(data["model"], data["schedule"], data["pruning"])):
        groups.setdefault(key, []).append(i)
    rows = []
    for (model, schedule, pruning), idx in groups.items():
        parts: dict[str, list[int]] = {}
        for i in idx:
            if data["partition"][i] != ALL:
                parts.setdefault(data["partition"][i], []).append(i)
        for part, part_idx in [(ALL, idx), *sorted(parts.items())]:
            group = {c: [data[c][i] for i in part_idx] for c in columns}
            rows.append(_summary_row((model, schedule, pruning), part, group, reference, fid_stats, fid_reference))
    base = {r["model"]: r["seconds_per_image"] for r in rows if r["is_reference"] and r["partition"] == ALL}
    for r in rows:
        ref = reference_seconds if reference_seconds is not None else base.get(r["model"])
        own = r["seconds_per_image"]
        r["speedup"] = ref / own if ref is not None and own else None
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def _summary_row(key: tuple[str, str, str], part, group: dict[str, list], reference, fid_stats, fid_reference) -> dict:
    """One summary row from the per-image values of one (model, schedule, pruning) group."""
    model, schedule, pruning = key
    row = {
        "model": model,
        "schedule": schedule,
        "pruning": pruning,
        "partition": part,
        "n_images": len(group["model"]),
        "n_errors": sum(e is not None for e in group[ERROR_COLUMN]),
        "is_reference": (schedule, pruning) == reference,
        "macs": _mean_std(group["macs"])[0],
        "seconds_per_image": _mean_std(group["seconds_per_image"])[0],
    }
    for col in QUALITY_COLUMNS:
        row[f"{col}_mean"], row[f"{col}_std"] = _mean_std(group[col], finite_only=col == "psnr")
    stats = (fid_stats or {}).get((*key, part))
    reference = fid_reference(model) if fid_reference else None
    row["fid"] = reference.fid(stats, part) if reference and stats else None
    return row


def _mean_std(values: list, finite_only: bool = False) -> tuple[float | None, float | None]:
    """Mean and sample std of the non-null values; `finite_only` drops infinities (PSNR of
    identical images) when finite values remain."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if finite_only and np.isfinite(arr).any():
        arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return None, None
    if not np.isfinite(arr).all():
        return float(arr.mean()), None
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
