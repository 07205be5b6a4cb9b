"""Full-reference metrics: how far a (cached, pruned) image is from its reference image.

The reference is the image of the same prompt and seed from the all-recompute schedule, so
these numbers isolate what a schedule changed. Images are uint8 `HxWx3` arrays.
PSNR is infinite for identical images; SSIM is 1; LPIPS is 0.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from ecad_ray.errors import UserError


def psnr(image_HWC: np.ndarray, reference_HWC: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over 8-bit pixels (`inf` when the images are equal)."""
    _check_pair(image_HWC, reference_HWC)
    diff = image_HWC.astype(np.float64) - reference_HWC.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(image_HWC: np.ndarray, reference_HWC: np.ndarray) -> float:
    """Structural similarity (scikit-image, 7x7 window or the largest odd one that fits)."""
    from skimage.metrics import structural_similarity

    _check_pair(image_HWC, reference_HWC)
    side = min(image_HWC.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    return float(
        structural_similarity(
            image_HWC, reference_HWC, channel_axis=2, data_range=255, win_size=max(win, 3)
        )
    )


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and reference {b.shape} differ in size")


_BACKBONE_FILES = {  # torchvision's ImageNet weights each LPIPS backbone starts from
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_TORCHVISION_BUILDERS = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# Smallest side every backbone's pooling accepts (AlexNet needs 31 px, SqueezeNet 24, VGG 16):
# smaller images (VAR's 8-16 px test and digits models) are upsampled to it, larger ones untouched.
LPIPS_MIN_SIDE = 32


def backbone_cached(net: str = "alex") -> bool:
    """True when torch's hub cache holds the ImageNet weights of LPIPS backbone `net`."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[net]).is_file()


class LpipsScorer:
    """LPIPS distance with lpips' shipped linear heads on a torchvision backbone.

    The backbone's ImageNet weights are not in the lpips wheel. They load from
    `backbone_weights` (a torchvision `.pth` file), else from torch's hub cache when already
    there; `random_backbone=True` uses an untrained backbone (lpips' `pnet_rand`, for tests:
    still 0 for identical images and larger for more different ones). Anything else is a
    `UserError` naming the file and both options, never a download attempt that hangs.
    Pairs smaller than `LPIPS_MIN_SIDE` are compared after bilinear upsampling to it.
    """

    def __init__(
        self,
        net: str = "alex",
        device: str | torch.device = "cpu",
        backbone_weights: str | None = None,
        random_backbone: bool = False,
    ) -> None:
        import lpips

        self.device = torch.device(device)
        cached = Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[net]
        if backbone_weights is None and not random_backbone and not backbone_cached(net):
            raise UserError(
                f"lpips: backbone weights {_BACKBONE_FILES[net]} not found (looked in {cached.parent}); "
                f"pass --lpips-backbone PATH to torchvision's {_TORCHVISION_BUILDERS[net]} ImageNet "
                f"weights, copy the file there, or use --lpips-random-backbone (tests only)"
            )
        if backbone_weights is not None and not Path(backbone_weights).is_file():
            raise UserError(f"--lpips-backbone {backbone_weights}: no such file")
        use_cache = backbone_weights is None and not random_backbone
        # lpips still passes torchvision's deprecated `pretrained`; a random backbone is seeded
        # so its scores repeat from run to run
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore", UserWarning)
            torch.manual_seed(0)
            self.model = lpips.LPIPS(net=net, pnet_rand=not use_cache, verbose=False)
        if backbone_weights is not None:
            _load_backbone(self.model, net, Path(backbone_weights))
        self.model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, images_BHWC: np.ndarray, references_BHWC: np.ndarray) -> np.ndarray:
        """LPIPS per image pair (0 = identical), as float64 of shape (B,)."""
        a = _to_unit_range(images_BHWC, self.device)
        b = _to_unit_range(references_BHWC, self.device)
        if min(a.shape[-2:]) < LPIPS_MIN_SIDE:
            scale = LPIPS_MIN_SIDE / min(a.shape[-2:])
            size = tuple(max(LPIPS_MIN_SIDE, round(side * scale)) for side in a.shape[-2:])
            a, b = (torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (a, b))
        return self.model(a, b).reshape(-1).double().cpu().numpy()


def _to_unit_range(images_BHWC: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 BHWC -> float BCHW in [-1, 1], the range LPIPS expects."""
    x = torch.from_numpy(np.ascontiguousarray(images_BHWC)).to(device).permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1.0


def _load_backbone(model, net: str, path: Path) -> None:
    """Copy torchvision ImageNet weights from `path` into lpips' sliced backbone."""
    import torchvision

    reference = getattr(torchvision.models, _TORCHVISION_BUILDERS[net])(weights=None)
    try:
        reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as err:
        raise UserError(
            f"--lpips-backbone {path}: not torchvision {_TORCHVISION_BUILDERS[net]} weights ({err})"
        ) from err
    features = reference.features
    for slice_name, block in model.net.named_children():  # slices keep the original layer index
        if slice_name.startswith("slice"):
            for index, layer in block.named_children():
                layer.load_state_dict(features[int(index)].state_dict())
