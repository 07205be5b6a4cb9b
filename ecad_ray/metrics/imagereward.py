"""ImageReward: a learned human-preference score of an image for its prompt (ECAD's objective).

Optional: `pip install 'ecad-ray[imagereward]'` installs the `image-reward` package. Its
weights (`ImageReward.pt` + `med_config.json` from the hub repo THUDM/ImageReward, and BLIP's
`bert-base-uncased` tokenizer) download on first use; offline they must be in
`--imagereward-root` (default ~/.cache/ImageReward) and the Hugging Face cache already, or
`--imagereward-model` must name the checkpoint file. Not exercised by the CPU tests (the
package is not installed there) beyond its missing-package error.
"""

from __future__ import annotations

import io
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
        checkpoint = Path(model) if Path(model).is_file() else root_dir / "ImageReward.pt"
        missing = [str(p) for p in (checkpoint, root_dir / "med_config.json") if not p.is_file()]
        if missing:
            raise UserError(
                f"imagereward: {' and '.join(missing)} not found; download them where there is network "
                "(`huggingface-cli download THUDM/ImageReward ImageReward.pt med_config.json --local-dir DIR`, "
                "plus bert-base-uncased into the Hugging Face cache) and pass --imagereward-root DIR"
            )
        try:
            self.model = reward.load(str(checkpoint), device=str(self.device), download_root=str(root_dir))
        except (OSError, RuntimeError, ValueError) as err:
            raise UserError(f"imagereward: cannot load {checkpoint} ({type(err).__name__}: {err})") from err

    @torch.no_grad()
    def __call__(self, images_BHWC: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """ImageReward score per pair (higher is preferred), float64 of shape (B,)."""
        return np.asarray(
            [float(self.model.score(prompt, _png(img))) for img, prompt in zip(images_BHWC, prompts)],
            dtype=np.float64,
        )


def _png(image_HWC: np.ndarray) -> io.BytesIO:
    """The image as an in-memory PNG: ImageReward's `score` opens what it is given with PIL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image_HWC, dtype=np.uint8)).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer
