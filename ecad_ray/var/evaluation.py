"""Original-vs-pruned evaluation of VAR runs: PSNR, SSIM, LPIPS against the original images,
CLIP score when the items have text prompts, and speed when the runs recorded it.

Image folders are either `var generate` outputs (`<item>/image.png`) or flat folders of
images (`<name>.png|jpg`). Items are matched by name. Prompts come from `metadata.json` /
`meta_data.json` (`{image_id: {"prompt": ...}}`), else from flat file names
(`xxx_yyy.jpg` -> "xxx yyy"), as the seed tool does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ecad_ray.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # what torchvision (hence lpips) loads for net='alex'
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EvalOptions:
    """How `var eval` scores images."""

    lpips_backbone: str = "pretrained"  # "pretrained" (AlexNet weights needed) or "random" (pnet_rand=True)
    clip_model: str | None = None  # hub id or folder; None = the default (skipped with one line if absent); "" = off
    device: str = "cpu"  # where LPIPS / CLIP run
    lpips_min_size: int = 64  # smaller images are upsampled (bilinear) so AlexNet's pooling fits


def find_images(folder: str | Path) -> dict[str, Path]:
    """Item name -> image path for a run folder or a flat image folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    items = {p.parent.name: p for p in sorted(folder.glob("*/image.png"))}
    if not items:
        items = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not items:
        raise UserError(f"{folder}: no images (<item>/image.png or *.png/*.jpg)")
    return items


def load_prompts(folder: str | Path, names: list[str], flat: bool) -> dict[str, str | None]:
    """Prompt per item name: metadata file first, file names for flat folders, else None."""
    folder = Path(folder)
    for meta_name in ("meta_data.json", "metadata.json"):
        meta_path = folder / meta_name
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as err:
                raise UserError(f"{meta_path}: not valid JSON ({err})") from err
            out = {}
            for n in names:
                entry = meta.get(n) or meta.get(n.split(".")[0]) or {}
                out[n] = entry.get("prompt") if isinstance(entry, dict) else None
            return out
    return {n: n.replace("_", " ").strip() if flat else None for n in names}


def read_image(path: Path) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1]."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for images in [0, 1] (inf when identical)."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(a, b, data_range=1.0)) if not np.array_equal(a, b) else float("inf")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM over RGB (window shrunk for tiny images)."""
    from skimage.metrics import structural_similarity

    side = min(a.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win))


def _to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()


class LpipsScorer:
    """LPIPS (AlexNet) with the linear weights from the lpips wheel; the backbone is torchvision's
    pretrained AlexNet, or a fixed random one (`pnet_rand=True`) where those weights are absent."""

    def __init__(self, backbone: str = "pretrained", device: str = "cpu", min_size: int = 64):
        import ecad_ray  # noqa: F401  (torchvision shim before lpips imports torchvision)

        if backbone not in ("pretrained", "random"):
            raise UserError(f"--lpips-backbone {backbone}: choose pretrained or random")
        if backbone == "pretrained":
            weights = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
            if not weights.exists():
                raise UserError(f"LPIPS: torchvision's AlexNet weights are missing ({weights}); copy "
                                f"{ALEXNET_WEIGHTS} there or pass --lpips-random-backbone (a fixed random backbone)")
        import warnings

        import lpips

        torch.manual_seed(0)  # the random backbone is the same in every run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notes about `pretrained=`
            self.model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=backbone == "random",
                                     verbose=False).to(device).eval()
        self.backbone, self.device, self.min_size = backbone, device, min_size

    @torch.no_grad()
    def __call__(self, a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
        """Distance per image pair (inputs in [0, 1])."""
        x, y = _to_tensor(a) * 2 - 1, _to_tensor(b) * 2 - 1
        if min(x.shape[-2:]) < self.min_size:
            size = (self.min_size, self.min_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return self.model(x.to(self.device), y.to(self.device)).flatten().cpu().tolist()


class ClipScorer:
    """CLIP score = 100 * max(cos(image, text), 0), as torchmetrics defines it."""

    def __init__(self, model: str = DEFAULT_CLIP, device: str = "cpu"):
        import ecad_ray  # noqa: F401

        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(model).to(device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError) as err:
            raise UserError(f"--clip-model {model}: CLIP weights not found locally or on the hub "
                            f"({type(err).__name__}); pass a local folder with --clip-model or use --no-clip") from err
        self.device = device
        self.size = self.model.config.vision_config.image_size

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray], prompts: list[str]) -> list[float]:
        """Score per (image, prompt)."""
        x = F.interpolate(_to_tensor(images), size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        x = (x - torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(_CLIP_STD).view(1, 3, 1, 1)
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        tok = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        img = self.model.get_image_features(pixel_values=x.to(self.device))
        txt = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                           attention_mask=tok["attention_mask"].to(self.device))
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        cos = F.cosine_similarity(img, txt, dim=-1)
        return (100 * cos.clamp(min=0)).cpu().tolist()


def run_speed(folder: Path) -> float | None:
    """Mean seconds per image a `var generate` run recorded (None for other folders)."""
    path = folder / "config_all.json"
    if not path.exists():
        return None
    items = json.loads(path.read_text()).get("items", [])
    vals = [c["seconds_per_image"] for c in items if "seconds_per_image" in c]
    return float(np.mean(vals)) if vals else None


def evaluate(orig: str | Path, others: dict[str, str | Path], options: EvalOptions = EvalOptions(),
             echo=print):
    """Per-image metrics (pandas DataFrame) for each named set against `orig`."""
    import pandas as pd

    orig = Path(orig)
    orig_items = find_images(orig)
    flat = not any(p.name == "image.png" for p in orig_items.values())
    prompts = load_prompts(orig, list(orig_items), flat)
    has_text = any(prompts.values())
    lp = LpipsScorer(options.lpips_backbone, options.device, options.lpips_min_size)
    clip = None
    if has_text and options.clip_model != "":
        try:
            clip = ClipScorer(options.clip_model or DEFAULT_CLIP, options.device)
        except UserError as err:
            if options.clip_model:  # asked for explicitly: a hard error
                raise
            echo(f"CLIP score skipped: {err}")
    rows = []
    orig_imgs = {n: read_image(p) for n, p in orig_items.items()}
    if clip is not None:
        named = [n for n in orig_items if prompts.get(n)]
        for n, s in zip(named, clip([orig_imgs[n] for n in named], [prompts[n] for n in named])):
            rows.append({"set": "orig", "item": n, "prompt": prompts[n], "psnr": np.nan, "ssim": np.nan,
                         "lpips": np.nan, "clip_score": s})
    for set_name, folder in others.items():
        folder = Path(folder)
        items = find_images(folder)
        common = [n for n in orig_items if n in items]
        if not common:
            raise UserError(f"--{set_name} {folder}: no image names in common with --orig {orig}")
        missing = len(orig_items) - len(common)
        if missing:
            echo(f"{set_name}: {missing} of {len(orig_items)} original images have no counterpart; they are left out")
        imgs = {n: read_image(items[n]) for n in common}
        for n in common:
            if imgs[n].shape != orig_imgs[n].shape:
                raise UserError(f"{items[n]}: size {imgs[n].shape[:2]} differs from the original's {orig_imgs[n].shape[:2]}")
        lpips_vals = []
        for i in range(0, len(common), 16):
            chunk = common[i:i + 16]
            lpips_vals += lp([orig_imgs[n] for n in chunk], [imgs[n] for n in chunk])
        clip_vals = {}
        if clip is not None:
            named = [n for n in common if prompts.get(n)]
            clip_vals = dict(zip(named, clip([imgs[n] for n in named], [prompts[n] for n in named])))
        for n, lv in zip(common, lpips_vals):
            rows.append({"set": set_name, "item": n, "prompt": prompts.get(n), "psnr": psnr(orig_imgs[n], imgs[n]),
                         "ssim": ssim(orig_imgs[n], imgs[n]), "lpips": lv, "clip_score": clip_vals.get(n, np.nan)})
    df = pd.DataFrame(rows, columns=["set", "item", "prompt", "psnr", "ssim", "lpips", "clip_score"])
    df.attrs["lpips_backbone"] = options.lpips_backbone
    return df


def summarize(df, folders: dict[str, Path]):
    """One row per set: means of each metric, images, seconds per image and speedup vs orig."""
    import pandas as pd

    speeds = {name: run_speed(Path(f)) for name, f in folders.items()}
    rows = []
    for name in folders:
        part = df[df["set"] == name]
        finite_psnr = part["psnr"].replace([np.inf], np.nan)
        rows.append({"set": name, "images": len(find_images(folders[name])) if name == "orig" else int(len(part)),
                     "psnr": finite_psnr.mean(), "psnr_identical": int((part["psnr"] == np.inf).sum()),
                     "ssim": part["ssim"].mean(), "lpips": part["lpips"].mean(), "clip_score": part["clip_score"].mean(),
                     "sec_per_image": speeds[name],
                     "speedup": (speeds["orig"] / speeds[name]) if speeds.get("orig") and speeds[name] else None})
    return pd.DataFrame(rows)
