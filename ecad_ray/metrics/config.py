"""What to measure and where each metric's weights come from.

One frozen `MetricsConfig` travels from the CLI to the metric objects (and, pickled, to Ray
actors), so every option a metric needs is named once here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecad_ray.errors import UserError

# Per-image metrics in table order, then the set-level one (FID is one number per schedule).
PER_IMAGE_METRICS = ("clip", "imagereward", "psnr", "ssim", "lpips")
REFERENCE_METRICS = ("psnr", "ssim", "lpips")  # need the reference image of the same prompt + seed
METRICS = PER_IMAGE_METRICS + ("fid",)

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_IMAGEREWARD_MODEL = "ImageReward-v1.0"
INCEPTION_FILE = "inception-2015-12-05.pt"  # clean-fid's TorchScript Inception
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
)


@dataclass(frozen=True)
class MetricsConfig:
    """The metrics to compute and the sources of their weights (all offline-capable)."""

    metrics: tuple[str, ...]  # subset of METRICS, in any order
    device: str = "cpu"  # torch device for CLIP / LPIPS / ImageReward / the FID extractor
    clip_model: str = DEFAULT_CLIP_MODEL  # hub id or local folder of a transformers CLIP model
    imagereward_model: str = DEFAULT_IMAGEREWARD_MODEL  # ImageReward name or local checkpoint file
    imagereward_root: str | None = None  # folder holding ImageReward's downloaded files
    lpips_net: str = "alex"  # LPIPS backbone: alex | vgg | squeeze (linear heads ship in lpips)
    lpips_backbone: str | None = None  # torchvision ImageNet weights file for the backbone
    lpips_random_backbone: bool = False  # random backbone (lpips' pnet_rand): tests only
    inception_path: str | None = None  # local inception-2015-12-05.pt (default: clean-fid's /tmp)
    fid_extractor: str = "inception"  # "inception", "pixels" (tiny, tests) or "module:function"
    fid_batch_size: int = 32  # images per feature-extractor call

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise UserError(
                f"--metrics {','.join(self.metrics)}: choose from {','.join(METRICS)}"
                + (f" (unknown: {','.join(unknown)})" if unknown else "")
            )
        if self.lpips_net not in ("alex", "vgg", "squeeze"):
            raise UserError(f"--lpips-net {self.lpips_net}: choose alex, vgg or squeeze")

    def wants(self, metric: str) -> bool:
        """True when `metric` was asked for."""
        return metric in self.metrics

    @property
    def needs_reference(self) -> bool:
        """True when a reference image per prompt + seed is needed (PSNR / SSIM / LPIPS)."""
        return any(m in REFERENCE_METRICS for m in self.metrics)


def parse_metric_names(text: str) -> tuple[str, ...]:
    """Split a `--metrics clip,lpips,...` value into names (validated by `MetricsConfig`)."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UserError(f"--metrics {text}: choose from {','.join(METRICS)}")
    return names
