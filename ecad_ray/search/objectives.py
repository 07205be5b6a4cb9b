"""The search's quality objective: one name, one scorer, one number to minimise.

Every objective turns a candidate's images (with their prompts and, for fidelity, the uncached
reference images of the same prompts and seeds) into `quality` (higher is better, what tables
show) and `loss` (what NSGA-II minimises as its first objective; ECAD's is 1 − mean ImageReward):

| name | quality | loss | needs |
|---|---|---|---|
| `judge` | demo caption accuracy (mean of colour, shape, position, size) | 1 − quality | the demo judge |
| `imagereward` | mean ImageReward | 1 − quality | its weights (`ecad-ray[imagereward]`) |
| `clip` | mean CLIP score / 100 | 1 − quality | CLIP weights |
| `psnr` | mean PSNR (dB, capped at 100) to the uncached image | −quality | — |
| `ssim` | mean SSIM to the uncached image | 1 − quality | scikit-image |
| `lpips` | 1 − mean LPIPS to the uncached image | 1 − quality | LPIPS backbone weights |

PSNR and SSIM to the uncached images are computed for every objective (cheap), so each
candidate's file says how far it strays from the uncached model whatever it was selected on.

`--fidelity psnr|ssim` makes that a second minimised quality objective (NSGA-II then has three:
`loss`, the fidelity loss, MACs): a judge-only search drifts to schedules the judge still
reads right but that look unlike the uncached images (PSNR ~26 dB where the peers keep
30-50), and a fidelity-only one does not ask whether the images still follow their prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ecad_ray.errors import UserError

OBJECTIVES = ("judge", "imagereward", "clip", "psnr", "ssim", "lpips")
FIDELITY = ("psnr", "ssim")  # what --fidelity may add as an objective (computed for every candidate)
PSNR_CAP = 100.0  # dB: identical images score this instead of infinity


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise UserError(f"--objective {name}: use one of {', '.join(OBJECTIVES)}")
    return name


def check_fidelity(name: str, objective: str) -> str:
    """'' (no fidelity objective) or one of `FIDELITY`, different from the quality objective."""
    if name and name not in FIDELITY:
        raise UserError(f"--fidelity {name}: use one of {', '.join(FIDELITY)} (or leave it out)")
    if name and name == objective:
        raise UserError(f"--fidelity {name}: already the --objective; pick another one or leave it out")
    return name


def objective_values(scores: dict, fidelity: str = "") -> list[float]:
    """What NSGA-II minimises for one scored candidate: [loss, (fidelity loss,) MAC ratio]."""
    values = [scores["loss"]]
    if fidelity == "psnr":
        values.append(-scores["psnr"])
    elif fidelity == "ssim":
        values.append(1.0 - scores["ssim"])
    return values + [scores["macs_ratio"]]


class QualityScorer:
    """Scores one candidate's images; built once per worker (model-based scorers load here)."""

    def __init__(self, objective: str, device: str = "cpu", lpips_random_backbone: bool = False,
                 with_lpips: bool = False):
        """`with_lpips`: also report LPIPS to the uncached images (the comparison table does)."""
        self.objective = check_objective(objective)
        self._model = None
        self._lpips = None
        if with_lpips and objective != "lpips":
            from ecad_ray.metrics.pairwise import LpipsScorer

            self._lpips = LpipsScorer(device=device, random_backbone=lpips_random_backbone)
        if objective == "judge":
            from ecad_ray.judge import load_judge

            self._model = load_judge()
        elif objective == "imagereward":
            from ecad_ray.metrics.imagereward import ImageRewardScorer

            self._model = ImageRewardScorer("ImageReward-v1.0", device)
        elif objective == "clip":
            from ecad_ray.metrics.clip_score import ClipScorer

            self._model = ClipScorer("openai/clip-vit-base-patch32", device)
        elif objective == "lpips":
            from ecad_ray.metrics.pairwise import LpipsScorer

            self._model = LpipsScorer(device=device, random_backbone=lpips_random_backbone)

    def __call__(self, images: np.ndarray, prompts: Sequence[str], reference: np.ndarray | None) -> dict[str, float]:
        """`{"quality", "loss", "psnr", "ssim", ...}` of one candidate's images."""
        out: dict[str, float] = {}
        if reference is not None:
            out.update(fidelity(images, reference))
            if self._lpips is not None:
                out["lpips"] = float(np.mean(self._lpips(images, reference)))
        name = self.objective
        if name == "judge":
            from ecad_ray.judge import score

            acc = score(list(prompts), images, self._model)
            parts = [v for v in (acc.colour, acc.shape, acc.position, acc.size) if not math.isnan(v)]
            out.update(judge_colour=acc.colour, judge_shape=acc.shape, judge_position=acc.position, judge_size=acc.size)
            quality = float(np.mean(parts)) if parts else 0.0
        elif name in ("imagereward", "clip"):
            scores = self._model(images, list(prompts))
            quality = float(np.mean(scores)) / (100.0 if name == "clip" else 1.0)
        elif name == "lpips":
            out["lpips"] = float(np.mean(self._model(images, _needs(reference, name))))
            quality = 1.0 - out["lpips"]
        else:
            _needs(reference, name)
            quality = out[name]
        out["quality"] = quality
        out["loss"] = -quality if name == "psnr" else 1.0 - quality
        return out


def fidelity(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean PSNR (capped) and SSIM of images to their uncached references."""
    from ecad_ray.metrics.pairwise import psnr, ssim

    if images.shape != reference.shape:
        raise ValueError(f"images {images.shape} and reference {reference.shape} differ")
    p = [min(psnr(a, b), PSNR_CAP) for a, b in zip(images, reference)]
    s = [ssim(a, b) for a, b in zip(images, reference)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s))}


def _needs(reference: np.ndarray | None, name: str) -> np.ndarray:
    if reference is None:
        raise ValueError(f"objective {name} needs the uncached reference images")
    return reference
