"""FID the clean-fid way, computed in a stream: features per batch, statistics per schedule.

Images go through clean-fid's "clean" resize (PIL bicubic to 299x299, no quantisation) and a
feature extractor: clean-fid's TorchScript Inception (`inception-2015-12-05.pt`, from a local
file), the tiny built-in `pixels` extractor (tests, smoke runs), or any `module:function`
callable. Features are folded into running sums (`FeatureStats`), so memory does not grow with
the number of images, and statistics merge across batches, actors and MJHQ categories.

Reference statistics come from a precomputed `.npz` (`mu`, `sigma`: what clean-fid's
`make_custom_stats` and its downloadable dataset statistics hold) or are computed from a folder
of images once and cached under a name made of the folder (name + hash of its path and of every
file's name, size and modification time), the resolution and the extractor, never one fixed
name (ECAD's bug): a COCO run can never pick up statistics made for MJHQ, another size or
another extractor, nor stale ones after the folder's images change.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecad_ray.errors import UserError
from ecad_ray.metrics.config import INCEPTION_FILE, INCEPTION_URL, MetricsConfig
from ecad_ray.prompt_sources import partition_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ALL = ""  # partition key of the statistics over every image
CLEAN_SIZE = 299  # clean-fid resizes every image to Inception's input size


@dataclass(frozen=True)
class FeatureExtractor:
    """A named map from float images `x_BCHW` in [0, 255] (299x299) to features `(B, D)`."""

    name: str  # goes into cached statistics' file names
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images_BHWC: np.ndarray) -> np.ndarray:
        """Features of uint8 `HxWx3` images after clean-fid's resize, float64 `(B, D)`."""
        x_BCHW = clean_resize(images_BHWC)
        with torch.no_grad():
            feats = self.fn(x_BCHW)
        return np.asarray(feats.detach().cpu().double().reshape(len(images_BHWC), -1))


def clean_resize(images_BHWC: np.ndarray) -> torch.Tensor:
    """clean-fid's "clean" preprocessing: PIL bicubic resize to 299 in float, `x_BCHW` in [0, 255]."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    out = np.stack([resize(np.asarray(img, dtype=np.uint8)) for img in images_BHWC])
    return torch.from_numpy(out.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def pixel_features(x_BCHW: torch.Tensor) -> torch.Tensor:
    """The project's tiny extractor: 4x4 average-pooled colours in [0, 1] (48 features).

    Not a perceptual feature space: it exists so FID's whole path (resize, streaming
    statistics, reference caching, Fréchet distance) is testable offline in milliseconds.
    """
    return torch.nn.functional.adaptive_avg_pool2d(x_BCHW / 255.0, 4).flatten(1)


def build_extractor(config: MetricsConfig) -> FeatureExtractor:
    """The extractor `config.fid_extractor` names (`inception`, `pixels` or `module:function`)."""
    spec = config.fid_extractor
    if spec == "pixels":
        return FeatureExtractor("pixels4x4", pixel_features)
    if spec == "inception":
        return _inception(config.inception_path, torch.device(config.device))
    if ":" not in spec:
        raise UserError(f"--fid-extractor {spec}: use inception, pixels or module:function")
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"--fid-extractor {spec}: cannot import it ({err})") from err
    return FeatureExtractor(_slug(spec), fn)


def _inception(path: str | None, device: torch.device) -> FeatureExtractor:
    """clean-fid's TorchScript Inception-v3 pool features (2048), loaded from a local file."""
    file = Path(path) if path else Path("/tmp") / INCEPTION_FILE  # where clean-fid looks
    if file.is_dir():
        file = file / INCEPTION_FILE
    if not file.is_file():
        raise UserError(
            f"fid: Inception weights {file} not found; download {INCEPTION_URL} where there is "
            "network and pass --inception PATH (or use --fid-extractor pixels for a smoke test)"
        )
    base = torch.jit.load(str(file), map_location=device).eval()

    def forward(x_BCHW: torch.Tensor) -> torch.Tensor:
        x = (x_BCHW.to(device) - 128.0) / 128.0  # the normalisation clean-fid applies
        return base.layers.forward(x).reshape(len(x_BCHW), -1)

    return FeatureExtractor("inception-v3-clean", forward)


class FeatureStats:
    """Running sums of features (count, sum, sum of outer products) in float64.

    Mean and covariance follow exactly from them; two `FeatureStats` add up, so batches,
    actors and partitions combine in any order.
    """

    def __init__(self) -> None:
        self.n = 0
        self.sum_D: np.ndarray | None = None
        self.outer_DD: np.ndarray | None = None

    def add(self, feats_BD: np.ndarray) -> None:
        """Fold a batch of features in."""
        feats_BD = np.asarray(feats_BD, dtype=np.float64)
        if self.sum_D is None:
            dim = feats_BD.shape[1]
            self.sum_D, self.outer_DD = np.zeros(dim), np.zeros((dim, dim))
        self.n += len(feats_BD)
        self.sum_D += feats_BD.sum(axis=0)
        self.outer_DD += feats_BD.T @ feats_BD

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean `(D,)` and unbiased covariance `(D, D)` (needs at least 2 images)."""
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images, got {self.n}")
        mu = self.sum_D / self.n
        cov = (self.outer_DD - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½), with clean-fid's diagonal-offset fallback."""
    from scipy import linalg

    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape} vs {mu2.shape} (another extractor?)")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # tiny negatives are round-off of a zero distance


@dataclass(frozen=True)
class ReferenceStats:
    """Reference mean/covariance per partition (`ALL` = every image) and where they came from."""

    source: str
    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    def fid(self, generated: FeatureStats, partition: str = ALL) -> float | None:
        """FID of generated statistics against the partition's reference (None if absent)."""
        if partition not in self.stats or generated.n < 2:
            return None
        mu, cov = generated.mean_cov()
        return frechet_distance(mu, cov, *self.stats[partition])


def load_reference(
    ref: str | Path,
    extractor: FeatureExtractor,
    resolution: tuple[int, int] | None,
    cache_dir: Path,
    batch_size: int = 32,
) -> ReferenceStats:
    """Reference statistics from a stats `.npz`, or a folder of images (cached per name).

    A folder's direct subfolders are partitions (MJHQ-30K keeps `<category>/<id>.jpg`), named
    as prompt sources name them (`partition_name`), so a run with MJHQ categories gets one FID
    per category as well as the overall one.
    """
    path = Path(ref)
    if path.is_file():
        return _read_stats_file(path)
    if not path.is_dir():
        raise UserError(f"--fid-ref {path}: neither a stats .npz file nor a folder of images")
    if resolution is None:
        raise UserError(f"--fid-ref {path}: the run's image size is unknown (no height/width in results)")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise UserError(f"--fid-ref {path}: needs at least 2 images ({len(files)} found)")
    cache = cache_dir / reference_stats_name(path, files, resolution, extractor.name)
    if cache.is_file():
        return _read_stats_file(cache)
    stats: dict[str, FeatureStats] = {}
    for batch in _batches(files, batch_size):
        feats = extractor(np.stack([load_rgb(f, resolution) for f in batch]))
        for file, row in zip(batch, feats):
            rel = file.relative_to(path).parts
            for part in {ALL, partition_name(rel[0]) if len(rel) > 1 else ALL}:
                stats.setdefault(part, FeatureStats()).add(row[None])
    result = {p: s.mean_cov() for p, s in stats.items() if s.n >= 2}
    _save_npz(cache, result)
    return ReferenceStats(str(cache), result)


def reference_stats_name(folder: Path, files: list[Path], resolution: tuple[int, int], extractor: str) -> str:
    """Cache file name: dataset folder + hash(path, files), resolution, extractor.

    The hash covers the folder's absolute path and each image's relative name, size and
    modification time, so two datasets never share statistics, and replacing images (even
    keeping their count) makes new ones, while re-reading an unchanged folder costs one `stat`
    per file.
    """
    key = hashlib.sha1(str(folder.resolve()).encode())
    for file in files:
        info = file.stat()
        key.update(f"|{file.relative_to(folder).as_posix()}:{info.st_size}:{info.st_mtime_ns}".encode())
    digest = key.hexdigest()[:10]
    height, width = resolution
    return f"{_slug(folder.resolve().name)}-{digest}_{height}x{width}_{_slug(extractor)}.npz"


def default_cache_dir() -> Path:
    """Where reference statistics are cached (`$ECAD_RAY_CACHE/fid_stats`, else ~/.cache)."""
    root = os.environ.get("ECAD_RAY_CACHE") or Path.home() / ".cache" / "ecad-ray"
    return Path(root) / "fid_stats"


def load_rgb(path: Path, resolution: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as uint8 `HxWx3`, centre-cropped and resized to `resolution` if given."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if resolution is not None and im.size != (resolution[1], resolution[0]):
            im = _center_crop_resize(im, resolution)
        return np.asarray(im, dtype=np.uint8)


def _center_crop_resize(im, resolution: tuple[int, int]):
    from PIL import Image

    height, width = resolution
    scale = max(width / im.width, height / im.height)
    im = im.resize((max(width, round(im.width * scale)), max(height, round(im.height * scale))), Image.BICUBIC)
    left, top = (im.width - width) // 2, (im.height - height) // 2
    return im.crop((left, top, left + width, top + height))


def _read_stats_file(path: Path) -> ReferenceStats:
    """Every partition's statistics in a `.npz` (`mu`/`sigma`, `mu_<partition>`/`sigma_<partition>`)."""
    try:
        with np.load(path) as data:
            parts = {k[3:] for k in data.files if k.startswith("mu_")}
    except (OSError, ValueError) as err:
        raise UserError(f"--fid-ref {path}: not a .npz statistics file ({err})") from err
    return ReferenceStats(str(path), {p: _load_npz(path, p) for p in parts | {ALL}})


def _load_npz(path: Path, partition: str) -> tuple[np.ndarray, np.ndarray]:
    suffix = f"_{partition}" if partition else ""
    try:
        with np.load(path) as data:
            return np.asarray(data["mu" + suffix], np.float64), np.asarray(data["sigma" + suffix], np.float64)
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"--fid-ref {path}: not FID statistics (needs arrays mu and sigma): {err}") from err


def _save_npz(path: Path, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Atomic write of `mu`/`sigma` (clean-fid's keys) plus `mu_<partition>`/`sigma_<partition>`."""
    arrays = {}
    for part, (mu, cov) in stats.items():
        suffix = f"_{part}" if part else ""
        arrays["mu" + suffix], arrays["sigma" + suffix] = mu, cov
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"
