"""Original vs pruned: several runs scored against one reference run, one row per run.

This is `ecad-ray var eval --orig A --fast B [--rl C]`'s table. Nothing is measured here:
each named run is scored by `evaluate_run(run, config, reference_dir=orig)`, the pass
`ecad-ray metrics RUN --reference ORIG` makes (it writes that run's `metrics.parquet` and
`summary.parquet`), and its summary's whole-setting rows are read back. The reference row
holds only its image count and speed.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ecad_ray.metrics.config import MetricsConfig
from ecad_ray.metrics.evaluate import evaluate_run
from ecad_ray.metrics.pairwise import backbone_cached
from ecad_ray.metrics.runs import ReferenceImages, check_distinct_schedules

COMPARE_COLUMNS = ("set", "pruning", "images", "psnr", "ssim", "lpips", "seconds_per_image", "speedup")


def lpips_backbone_note(config: MetricsConfig) -> tuple[MetricsConfig, str]:
    """(config, backbone name): LPIPS on the ImageNet backbone when its weights are at hand (or
    given), else on lpips' fixed random backbone (fine for ranking settings, not for papers)."""
    if not config.wants("lpips") or config.lpips_backbone or config.lpips_random_backbone:
        return config, "random" if config.lpips_random_backbone else "ImageNet"
    if backbone_cached(config.lpips_net):
        return config, "ImageNet"
    from dataclasses import replace

    return replace(config, lpips_random_backbone=True), "random (ImageNet weights absent)"


def compare_runs(orig: Path, runs: dict[str, Path], config: MetricsConfig,
                 batch_size: int = 16) -> tuple[list[dict], dict[str, str]]:
    """(one row per run, `COMPARE_COLUMNS`; metrics that could not run, name -> reason).

    `runs` maps a set name (`fast`, `rl`) to a run folder; every folder is checked before any
    is scored, so a bad one costs nothing."""
    reference = ReferenceImages(Path(orig), option="--orig")
    for name, run in runs.items():
        check_distinct_schedules(Path(run), f"--{name}")
    rows = [{"set": "orig", "pruning": reference.pruning, "images": len(reference.paths), "psnr": None,
             "ssim": None, "lpips": None, "seconds_per_image": reference.seconds_per_image,
             "speedup": 1.0 if reference.seconds_per_image else None}]
    errors: dict[str, str] = {}
    for name, run in runs.items():
        result = evaluate_run(Path(run), config, reference_dir=Path(orig), batch_size=batch_size)
        errors.update(result.load_errors)
        for r in pq.read_table(result.summary_path).to_pylist():
            if r["partition"] == "":
                rows.append({"set": name, "pruning": r["pruning"], "images": r["n_images"], "psnr": r["psnr_mean"],
                             "ssim": r["ssim_mean"], "lpips": r["lpips_mean"],
                             "seconds_per_image": r["seconds_per_image"], "speedup": r["speedup"]})
    return rows, errors
