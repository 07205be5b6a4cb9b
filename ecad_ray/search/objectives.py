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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ecad_ray.errors import UserError

OBJECTIVES = ("judge", "imagereward", "clip", "psnr", "ssim", "lpips")
PSNR_CAP = 100.0  # dB: identical images score this instead of infinity


def check_objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise UserError(f"--objective {name}: use one of {', '.join(OBJECTIVES)}")
    return name


class QualityScorer:
    """Scores one candidate's images; built once per worker (model-based scorers load here)."""

    def __init__(self, objective: str, device: str = "cpu", lpips_random_backbone: bool = False):
        self.objective = check_objective(objective)
        self._model = None
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
