"""`MetricsStage`: the Ray Data stage that scores generated images inside the streaming plan.

Wraps `ecad_ray.metrics.suite.MetricSuite` (all metric code lives in the library). Use it as

    ds.map_batches(MetricsStage, fn_constructor_kwargs={"config": MetricsConfig(...),
                   "reference_dir": ..., "reference_schedule": ...},
                   compute=ray.data.ActorPoolStrategy(size=1), batch_size=16)

then hand `ds.iter_batches()` to `ecad_ray.metrics.evaluate.write_metric_tables`, which writes
`metrics.parquet` / `summary.parquet` exactly as `ecad-ray metrics` does. A metric that
cannot load or fails on a batch fills its column with NaN and explains in `metric_error`;
the batch (and its images) always goes through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actors.stage import Stage
from ecad_ray.metrics.config import MetricsConfig
from ecad_ray.metrics.runs import ReferenceImages
from ecad_ray.metrics.suite import ERROR_COLUMN, FEATURES_COLUMN, METRIC_COLUMNS, MetricSuite


class MetricsStage(Stage):
    """Adds metric columns to batches of generated images (a Ray Data callable class)."""

    name = "metrics"
    consumes = {
        "image": "uint8 HxWx3 generated image",
        "prompt": "prompt text (CLIP score, ImageReward)",
        "prompt_id": "stable prompt id (matches the reference image)",
        "seed": "noise seed (matches the reference image)",
        "schedule": "schedule name (summary grouping)",
        "model": "model name (summary grouping)",
    }
    produces = {
        **{
            column: f"float64 {metric} per image, NaN when not computed"
            for metric, column in METRIC_COLUMNS.items()
        },
        FEATURES_COLUMN: "float32 (D,) FID features per image (only with fid; not stored in tables)",
        ERROR_COLUMN: "why a metric is missing for this row, None when all succeeded",
    }

    def __init__(
        self,
        config: MetricsConfig,
        reference_dir: str | Path | None = None,
        reference_schedule: str | None = None,
    ) -> None:
        """`config`: metrics and weight sources; `reference_dir`: a finished run holding the
        reference images (PSNR/SSIM/LPIPS), `reference_schedule`: its all-recompute schedule
        (default: the only one, or the one named like a baseline)."""
        reference = None
        if config.needs_reference and reference_dir is not None:
            reference = ReferenceImages(Path(reference_dir), reference_schedule)
        self.suite = MetricSuite(config, reference)

    @staticmethod
    def validate(config: MetricsConfig, reference_dir: str | Path | None = None,
                 reference_schedule: str | None = None) -> None:
        """Raise the `UserError` a worker would hit (no reference for PSNR/SSIM/LPIPS, a bad
        reference run or schedule) in the driver, before the plan starts. Loads no weights."""
        reference = None
        if config.needs_reference and reference_dir is not None:
            reference = ReferenceImages(Path(reference_dir), reference_schedule)
        MetricSuite(config, reference)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch with the metric columns added (input columns are passed through)."""
        self.check(batch)
        scored = self.suite.score(batch)
        if scored.get(FEATURES_COLUMN) is None:
            scored.pop(FEATURES_COLUMN, None)
        return {**batch, **scored}
