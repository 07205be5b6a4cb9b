"""Image-quality metrics for generated runs, and the tables and report built from them.

Per image: CLIP score, ImageReward, and PSNR / SSIM / LPIPS against the reference image of
the same prompt and seed; per schedule: FID (clean-fid), means, speed. Modules:
`config` (what to measure), `clip_score`, `imagereward`, `pairwise`, `fid` (the metrics),
`suite` (all of them over a batch, failure-tolerant), `tables` (Arrow schemas, writer,
summary), `evaluate` (a whole run), `runs` (reading a run directory), `report` (print, plots).
Heavy dependencies (transformers, lpips, clean-fid, matplotlib) load only when used.
"""

from ecad_ray.metrics.config import METRICS, MetricsConfig, parse_metric_names

__all__ = ["METRICS", "MetricsConfig", "parse_metric_names"]
