"""All requested metrics over one batch of generated images, failure-tolerant.

`MetricSuite` is what a metrics pass and the Ray `MetricsStage` both call. Each metric loads
lazily on first use; a metric that cannot load (weights missing, package absent) or fails
on a batch leaves its column null and says why in the row's `metric_error`, while the other
metrics, the images and the run carry on. Load failures are also kept in `load_errors` so
the CLI can print each once.
"""

from __future__ import annotations


import numpy as np

from ecad_ray.errors import UserError
from ecad_ray.metrics.config import PER_IMAGE_METRICS, MetricsConfig
from ecad_ray.metrics.runs import ReferenceImages

# metric name -> column it fills in the per-image table
METRIC_COLUMNS = {"clip": "clip_score", "imagereward": "imagereward", "psnr": "psnr", "ssim": "ssim", "lpips": "lpips"}
FEATURES_COLUMN = "fid_features"  # per-image FID features, folded into statistics, not stored
ERROR_COLUMN = "metric_error"


class MetricSuite:
    """Computes the configured metrics for batches of `image`, `prompt`, `prompt_id`, `seed`."""

    def __init__(self, config: MetricsConfig, reference: ReferenceImages | None = None) -> None:
        if config.needs_reference and reference is None:
            raise UserError("--reference: PSNR / SSIM / LPIPS need a reference run (or schedule)")
        self.config = config
        self.reference = reference
        self.load_errors: dict[str, str] = {}
        self._scorers: dict[str, object] = {}

    def score(self, batch: dict) -> dict[str, object]:
        """New columns for `batch`: one float64 array per metric, `metric_error`, FID features."""
        images = list(batch["image"])
        n = len(images)
        out: dict[str, object] = {}
        errors: list[list[str]] = [[] for _ in range(n)]
        refs = self._references(batch, errors) if self.config.needs_reference else None
        for metric in PER_IMAGE_METRICS:
            if self.config.wants(metric):
                out[METRIC_COLUMNS[metric]] = self._run(metric, images, batch, refs, errors)
        if self.config.wants("fid"):
            out[FEATURES_COLUMN] = self._fid_features(images, errors)
        out[ERROR_COLUMN] = np.array(["; ".join(e) if e else None for e in errors], dtype=object)
        return out

    def scorer(self, metric: str):
        """The loaded scorer for `metric`; raises the remembered `UserError` when it cannot load."""
        if metric in self.load_errors:
            raise UserError(self.load_errors[metric])
        if metric not in self._scorers:
            try:
                self._scorers[metric] = self._build(metric)
            except Exception as err:  # noqa: BLE001 - remembered: the metric is not retried per batch
                self.load_errors[metric] = str(err) if isinstance(err, UserError) else _describe(metric, err)
                raise UserError(self.load_errors[metric]) from err
        return self._scorers[metric]

    def _build(self, metric: str):
        c = self.config
        if metric == "clip":
            from ecad_ray.metrics.clip_score import ClipScorer

            return ClipScorer(c.clip_model, c.device)
        if metric == "imagereward":
            from ecad_ray.metrics.imagereward import ImageRewardScorer

            return ImageRewardScorer(c.imagereward_model, c.device, c.imagereward_root)
        if metric == "lpips":
            from ecad_ray.metrics.pairwise import LpipsScorer

            return LpipsScorer(c.lpips_net, c.device, c.lpips_backbone, c.lpips_random_backbone)
        if metric == "fid":
            from ecad_ray.metrics.fid import build_extractor

            return build_extractor(c)
        from ecad_ray.metrics import pairwise

        return getattr(pairwise, metric)  # psnr / ssim: plain functions of one pair

    def _run(self, metric, images, batch, refs, errors) -> np.ndarray:
        """One metric over the batch; NaN (null in tables) where it could not be computed."""
        values = np.full(len(images), np.nan)
        try:
            scorer = self.scorer(metric)
            if metric in ("clip", "imagereward"):
                values[:] = scorer(np.stack(images), list(batch["prompt"]))
            else:
                rows = _comparable(metric, images, refs, errors)
                if rows and metric == "lpips":
                    pairs = (np.stack([images[i] for i in rows]), np.stack([refs[i] for i in rows]))
                    values[rows] = scorer(*pairs)
                elif rows:
                    values[rows] = [scorer(images[i], refs[i]) for i in rows]
        except Exception as err:  # noqa: BLE001 - a metric must never take the run down
            message = str(err) if isinstance(err, UserError) else _describe(metric, err)
            for row_errors in errors:
                row_errors.append(message)
        return values

    def _fid_features(self, images, errors) -> np.ndarray | None:
        """FID features `(B, D)` float32, or None (with errors noted) when the extractor fails."""
        try:
            return self.scorer("fid")(np.stack(images)).astype(np.float32)
        except Exception as err:  # noqa: BLE001
            message = str(err) if isinstance(err, UserError) else _describe("fid", err)
            for row_errors in errors:
                row_errors.append(message)
            return None

    def _references(self, batch: dict, errors: list[list[str]]) -> list[np.ndarray | None]:
        """The reference image for every row (None, with an error noted, where there is none)."""
        refs = []
        models = batch["model"] if "model" in batch else [None] * len(batch["prompt_id"])
        for i, (pid, seed, model) in enumerate(zip(batch["prompt_id"], batch["seed"], models)):
            try:
                ref = self.reference.image(pid, seed, model)
            except OSError as err:
                ref = None
                errors[i].append(f"reference: cannot read the image for prompt_id={pid} seed={seed} ({err})")
            else:
                if ref is None:
                    errors[i].append(f"reference: no image for prompt_id={pid} seed={seed}")
            refs.append(ref)
        return refs


def _describe(metric: str, err: Exception) -> str:
    """One line for an unexpected metric failure."""
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{metric}: {type(err).__name__}" + (f": {first}" if first else "")


def _comparable(metric: str, images, refs, errors) -> list[int]:
    """Rows whose reference exists and has the image's size (others get an error noted)."""
    rows = []
    for i, (image, ref) in enumerate(zip(images, refs)):
        if ref is not None and ref.shape != image.shape:
            errors[i].append(f"{metric}: reference is {ref.shape}, image is {image.shape}")
        elif ref is not None:
            rows.append(i)
    return rows

