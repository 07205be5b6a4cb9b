"""Score a whole run: stream its images through the metrics and write both tables.

Two ways in, one way out:
- `evaluate_run(run_dir, config)`: the separate pass (`ecad-ray metrics`), reading a finished
  run's `results.parquet` and images batch by batch in this process;
- `write_metric_tables(run_dir, scored_batches, ...)`: for batches already scored elsewhere
  (the Ray plan's `MetricsStage`, `ds.iter_batches()`), so both write identical tables.

FID's reference: `--fid-ref` (a folder of images or a stats `.npz`), else the reference
setting's own images in this run ("FID vs the all-recompute / unpruned baseline", 0 for the
baseline). A run's setting is its (schedule, pruning) pair (see `ecad_ray.metrics.runs`), so
`generate` and `var generate` runs are scored the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ecad_ray.errors import UserError
from ecad_ray.metrics.config import MetricsConfig
from ecad_ray.metrics.fid import ALL, FeatureExtractor, ReferenceStats, default_cache_dir, load_reference
from ecad_ray.metrics.runs import (
    ReferenceImages,
    check_distinct_schedules,
    iter_result_batches,
    pick_reference,
    read_results,
    settings_of,
)
from ecad_ray.records import NOT_APPLIED, setting_label
from ecad_ray.metrics.suite import MetricSuite
from ecad_ray.atomic import write_table_atomic
from ecad_ray.metrics.tables import SUMMARY_FILE, MetricsTableWriter, summarize


@dataclass(frozen=True)
class Evaluation:
    """What a metrics pass wrote, and the metrics that could not run (name -> one-line reason)."""

    metrics_path: Path
    summary_path: Path
    reference_schedule: str | None
    fid_source: str | None
    load_errors: dict[str, str] = field(default_factory=dict)
    reference_pruning: str = NOT_APPLIED


def evaluate_run(
    run_dir: Path,
    config: MetricsConfig,
    reference_dir: Path | None = None,
    reference_schedule: str | None = None,
    fid_ref: str | None = None,
    batch_size: int = 16,
    cache_dir: Path | None = None,
    reference_pruning: str | None = None,
) -> Evaluation:
    """Score every image of `run_dir` (a `generate` or `var generate` run, or a folder of them)
    and write `metrics.parquet` and `summary.parquet` there."""
    run_dir = Path(run_dir)
    check_distinct_schedules(run_dir)
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be positive")
    if fid_ref is not None and config.wants("fid") and not Path(fid_ref).exists():
        raise UserError(f"--fid-ref {fid_ref}: no such folder or statistics file")
    reference, ref_setting = _reference(run_dir, config, reference_dir, reference_schedule, reference_pruning)
    ref_schedule, ref_pruning = ref_setting or (None, NOT_APPLIED)
    suite = MetricSuite(config, reference)
    batches = (batch | suite.score(batch) for batch in iter_result_batches(run_dir, batch_size))

    def extractor() -> FeatureExtractor:
        return suite.scorer("fid")

    metrics_path, summary_path, fid_source = write_metric_tables(
        run_dir,
        batches,
        reference_schedule=ref_schedule,
        fid_ref=fid_ref if config.wants("fid") else None,
        extractor=extractor,
        resolution=_resolution(run_dir),
        reference_seconds=reference.seconds_per_image if reference_dir and reference else None,
        cache_dir=cache_dir,
        reference_pruning=ref_pruning,
    )
    return Evaluation(metrics_path, summary_path, ref_schedule, fid_source, dict(suite.load_errors), ref_pruning)


def write_metric_tables(
    run_dir: Path,
    scored_batches: Iterable[dict],
    reference_schedule: str | None = None,
    fid_ref: str | None = None,
    extractor=None,
    resolution: tuple[int, int] | None = None,
    reference_seconds: float | None = None,
    cache_dir: Path | None = None,
    reference_pruning: str = NOT_APPLIED,
) -> tuple[Path, Path, str | None]:
    """Write `metrics.parquet` from scored batches, then `summary.parquet` with FID and speedups.

    The reference setting is (`reference_schedule`, `reference_pruning`).
    `extractor` (a `FeatureExtractor` or a function returning one) is only needed to compute
    reference statistics from a folder given as `fid_ref`.
    """
    writer = MetricsTableWriter(run_dir)
    try:
        for batch in scored_batches:
            writer.write(batch)
    except BaseException:
        writer.abort()
        raise
    metrics_path = writer.close()
    references, source, fid_error = {}, None, None
    if writer.fid_stats:
        try:
            reference = (reference_schedule, reference_pruning)
            references, source = _fid_references(writer, fid_ref, extractor, resolution, reference, cache_dir)
        except UserError as err:  # a bad reference costs the FID column, not the summary
            fid_error = err
    summary = summarize(metrics_path, reference_schedule, writer.fid_stats, references.get, reference_seconds,
                        reference_pruning)
    summary_path = write_table_atomic(summary, Path(run_dir) / SUMMARY_FILE)
    if fid_error is not None:
        raise fid_error
    return metrics_path, summary_path, source


def _fid_references(writer, fid_ref, extractor, resolution, reference: tuple[str | None, str], cache_dir):
    """FID reference statistics per model, and where they came from.

    `fid_ref` (folder or `.npz`) serves every model; without it each model is compared with
    its own reference setting's images.
    """
    models = {model for model, *_ in writer.fid_stats}
    if fid_ref is not None:
        if extractor is None:
            return {}, None
        built = extractor() if callable(extractor) and not isinstance(extractor, FeatureExtractor) else extractor
        stats = load_reference(fid_ref, built, resolution, cache_dir or default_cache_dir())
        return dict.fromkeys(models, stats), stats.source
    references = {}
    source = f"setting {setting_label(*reference)} of this run" if reference[0] is not None else None
    for model in models:
        own = {
            part: s.mean_cov()
            for (m, schedule, pruning, part), s in writer.fid_stats.items()
            if m == model and (schedule, pruning) == reference and s.n >= 2
        }
        if own:
            references[model] = ReferenceStats(source, own)
    return references, source if references else None


def _reference(run_dir, config, reference_dir, reference_schedule, reference_pruning):
    """The reference images (when PSNR/SSIM/LPIPS need them) and the reference setting of this
    run, (schedule, pruning), or None when the reference is another run or there is none."""
    source = Path(reference_dir) if reference_dir else run_dir
    option = "--reference" if reference_dir else "RUN_DIR"
    if config.needs_reference:
        reference = ReferenceImages(source, reference_schedule, option, reference_pruning)
        own = None if reference_dir else (reference.schedule, reference.pruning)
        return reference, own
    if reference_dir:
        return ReferenceImages(source, reference_schedule, option, reference_pruning), None
    try:
        return None, pick_reference(settings_of(run_dir), reference_schedule, reference_pruning)
    except UserError:
        if reference_schedule is not None or reference_pruning is not None:
            raise
        return None, None  # no baseline in the run: no speedup column, nothing else lost


def _resolution(run_dir: Path) -> tuple[int, int] | None:
    """The generated images' (height, width), from the results' first row."""
    table = read_results(run_dir, ["height", "width"])
    if table.num_rows == 0 or table.column("height")[0].as_py() is None:
        return None
    return int(table.column("height")[0].as_py()), int(table.column("width")[0].as_py())


__all__ = ["ALL", "Evaluation", "evaluate_run", "write_metric_tables"]
