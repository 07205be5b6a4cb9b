"""Caption accuracy of a run made from the demo's shapes captions, read back by the judge.

What `ecad-ray demo score` prints: per setting (a DiT run's schedule, a VAR run's pruning;
any results column with `by`), the judge's colour / shape / position / size accuracy against
each image's caption, and the Fréchet distance between the judge features of the images and
of real renders of the same captions. The run is read through the one reader every metric
uses (`ecad_ray.metrics.runs`), so `generate` and `var generate` runs, or a folder of them,
are scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecad_ray.errors import UserError
from ecad_ray.judge import JUDGE_PATH, Fidelity, features, frechet_distance, load_judge, score
from ecad_ray.metrics.fid import load_rgb
from ecad_ray.metrics.runs import read_results, resolve_image, results_file, run_dirs
from ecad_ray.records import RESULTS_FILE, setting_label
from ecad_ray.shapes import parse_caption, render_captions

JUDGE_SIZE = (32, 32)  # the judge reads 32x32 images; others are resized to it


@dataclass(frozen=True)
class GroupScore:
    """The judge's reading of one group of images."""

    group: str  # the setting label, or the value of the `by` column
    fidelity: Fidelity  # colour / shape / position / size accuracies and counts
    fid: float  # judge-feature FID vs real renders of the same captions (NaN under 2 valid captions)


def score_run(run_dir: Path, judge_path: Path | None = None, by: str | None = None,
              fid_seed: int = 0) -> list[GroupScore]:
    """Judge every image of `run_dir` against its caption, one `GroupScore` per group (first-seen order)."""
    run_dir = Path(run_dir)
    if by is not None:
        for run in run_dirs(run_dir):
            if by not in results_file(run).schema_arrow.names:
                raise UserError(f"--by {by}: no such column in {run / RESULTS_FILE}")
    table = read_results(run_dir, ["prompt", "image_path", "schedule", "pruning", *([by] if by else [])])
    if table.num_rows == 0:
        raise UserError(f"{run_dir}: {RESULTS_FILE} has no rows")
    rows = table.to_pylist()
    judge = load_judge(judge_path or JUDGE_PATH)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = str(r[by]) if by else setting_label(r["schedule"], r["pruning"])
        groups.setdefault(key, []).append(r)
    scores = []
    for name, members in groups.items():
        prompts = [str(r["prompt"]) for r in members]
        images = np.stack([_load(run_dir, r["image_path"]) for r in members])
        fidelity = score(prompts, images, judge)
        if fidelity.n_images == 0:
            raise UserError(f"{run_dir}: no prompt of {name} follows the demo caption grammar (see docs/demo.md)")
        valid = [parse_caption(p) is not None for p in prompts]
        fid = float("nan")
        if sum(valid) >= 2:
            real = render_captions([p for p, ok in zip(prompts, valid) if ok], fid_seed).images
            fid = frechet_distance(features(images[valid], judge), features(real, judge))
        scores.append(GroupScore(name, fidelity, fid))
    return scores


def _load(run_dir: Path, image_path: str) -> np.ndarray:
    """One listed image as uint8 32x32x3; `UserError` naming it when it is missing."""
    path = resolve_image(run_dir, image_path)
    if not path.is_file():
        raise UserError(f"{path}: image listed in {RESULTS_FILE} is missing")
    return load_rgb(path, JUDGE_SIZE)
