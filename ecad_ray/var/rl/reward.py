"""An episode's reward: fidelity of its image to the unpruned image of the same condition and
seed, minus a cost per unit of FLOPs share.

Fidelity uses the project's full-reference metrics (`ecad_ray.metrics.pairwise`): SSIM (1 =
identical) or PSNR mapped to [0, 1] (dB / 50, capped). A hard budget is not a reward term: the
action mask (`state.action_mask`) never lets a plan exceed it, so the reward only trades
fidelity against FLOPs inside the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ecad_ray.errors import UserError
from ecad_ray.metrics.pairwise import psnr, ssim

FIDELITY_METRICS = ("ssim", "psnr")
PSNR_CAP_DB = 50.0  # identical images have infinite PSNR; 50 dB is invisible at 8 bits


def to_uint8(images_B3HW: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] -> uint8 (B, H, W, 3), the form the metrics (and PNGs) use."""
    return (images_B3HW.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def fidelity(image_HWC: np.ndarray, reference_HWC: np.ndarray, metric: str = "ssim") -> float:
    """Similarity to the unpruned image in [0, 1] (1 = identical)."""
    if metric == "ssim":
        return ssim(image_HWC, reference_HWC)
    if metric == "psnr":
        value = psnr(image_HWC, reference_HWC)
        return 1.0 if math.isinf(value) else min(value, PSNR_CAP_DB) / PSNR_CAP_DB
    raise UserError(f"--fidelity {metric}: choose one of {', '.join(FIDELITY_METRICS)}")


@dataclass(frozen=True)
class RewardConfig:
    """How episodes are scored."""

    metric: str = "ssim"
    flops_cost: float = 0.5  # reward lost per unit of FLOPs share (1.0 = all of the unpruned FLOPs)

    def __post_init__(self) -> None:
        if self.metric not in FIDELITY_METRICS:
            raise UserError(f"--fidelity {self.metric}: choose one of {', '.join(FIDELITY_METRICS)}")
        if self.flops_cost < 0:
            raise UserError(f"--flops-cost {self.flops_cost:g}: must be >= 0")

    def reward(self, fid: float, share: float) -> float:
        """fidelity - flops_cost x FLOPs share."""
        return fid - self.flops_cost * share


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: each reward standardised within its group (same condition and seed).

    The group mean is the baseline a value network would otherwise have to learn; a group whose
    plans all scored the same teaches nothing (all zeros)."""
    centred = rewards - rewards.mean()
    std = rewards.std(unbiased=False)
    return centred / (std + eps) if std > eps else torch.zeros_like(rewards)
