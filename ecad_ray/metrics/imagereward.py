"""ImageReward: a learned human-preference score of an image for its prompt (ECAD's objective).

Optional: `pip install 'ecad-ray[imagereward]'` installs the `image-reward` package. Its
weights (`ImageReward.pt` + `med_config.json`) download on first use; offline they must be in
`--imagereward-root` already, or `--imagereward-model` must name the checkpoint file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ecad_ray.errors import UserError


class ImageRewardScorer:
    """Scores (image, prompt) pairs with an ImageReward model held on `device`."""

    def __init__(self, model: str, device: str | torch.device = "cpu", root: str | None = None) -> None:
        try:
            import ImageReward as reward  # the `image-reward` package
        except ImportError as err:
            raise UserError(
                "imagereward: the ImageReward package is not installed; "
                "install it with `pip install 'ecad-ray[imagereward]'`"
            ) from err
        self.device = torch.device(device)
        root_dir = Path(root) if root else Path.home() / ".cache" / "ImageReward"
        local = Path(model)
        if not local.is_file() and not (root_dir / f"{model.split('-')[0]}.pt").is_file():
            raise UserError(
                f"imagereward: weights for {model} not found (looked for {local} and "
                f"{root_dir / 'ImageReward.pt'}); download them where there is network "
                "(`ImageReward.load('ImageReward-v1.0')` fetches ImageReward.pt and med_config.json "
                "into ~/.cache/ImageReward) and pass --imagereward-root with that folder"
            )
        try:
            self.model = reward.load(model, device=str(self.device), download_root=str(root_dir))
        except (OSError, RuntimeError, ValueError) as err:
            raise UserError(f"imagereward: cannot load {model} from {root_dir} ({err})") from err

    @torch.no_grad()
    def __call__(self, images_BHWC: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """ImageReward score per pair (higher is preferred), float64 of shape (B,)."""
        from PIL import Image

        scores = [
            float(self.model.score(prompt, [Image.fromarray(np.asarray(img, dtype=np.uint8))]))
            for img, prompt in zip(images_BHWC, prompts)
        ]
        return np.asarray(scores, dtype=np.float64)
