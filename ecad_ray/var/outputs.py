"""What a VAR run writes: per item an image, optional per-scale intermediates and DFT
spectra, and a `config.json`; per run `config_all.json` and `metadata.json`.

Layout under the output folder::

    <item>/image.png
    <item>/config.json                    provenance: model, condition, seed, ratios, timings
    <item>/summed_codes/scaleKK_wPN.png   decoded f_hat after scale KK (non-skipped scales)
    <item>/rescale_codes/scaleKK_wPN.png  decoded residual codes of scale KK alone
    <item>/spectra/scaleKK_wPN_<domain>_<kind>.npy
          domain pixel: kind summed | residual;  domain latent: summed | residual | unscaled
    config_all.json                       the run: options, model config, every item
    metadata.json                         {item: {"prompt": ..., "class": ...}} for `var eval`

Files are built in memory (`item_files`) so a Ray stage can produce them and another write
them; every write is atomic (temp file + rename).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ecad_ray.atomic import write_bytes_atomic
from ecad_ray.var.generation import GenerationResult


def item_name(index: int, seed: int, class_label: int | None = None, prompt_id: str | None = None) -> str:
    """`0003__class:7__seed:042`-style names that sort by index and carry provenance."""
    cond = f"class:{class_label}" if class_label is not None and class_label >= 0 else f"prompt:{prompt_id or index}"
    return f"{index:04d}__{cond}__seed:{seed:03d}"


def png_bytes(img_3HW: torch.Tensor) -> bytes:
    """PNG of an image tensor in [0, 1]."""
    arr = (img_3HW.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    """`.npy` file contents."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def log_spectrum(x_CHW: torch.Tensor) -> np.ndarray:
    """Centred log-magnitude 2-D DFT, averaged over channels: (H, W) float32."""
    f = torch.fft.fftshift(torch.fft.fft2(x_CHW.float()), dim=(-2, -1))
    return torch.log1p(f.abs()).mean(dim=0).cpu().numpy().astype(np.float32)


def item_files(result: GenerationResult, b: int, intermediates: bool, spectra: bool) -> dict[str, bytes]:
    """Relative path -> file bytes for item `b` of a batch (config.json excluded)."""
    files = {"image.png": png_bytes(result.images_B3HW[b])}
    for r in result.records:
        if r.skipped or r.summed_BChw is None:
            continue
        stem = f"scale{r.scale_index:02d}_w{r.width}"
        summed, rescale = result.summed_images[r.scale_index][b], result.rescale_images[r.scale_index][b]
        if intermediates:
            files[f"summed_codes/{stem}.png"] = png_bytes(summed)
            files[f"rescale_codes/{stem}.png"] = png_bytes(rescale)
        if spectra:
            for domain, kind, x in (("pixel", "summed", summed), ("pixel", "residual", rescale),
                                    ("latent", "summed", r.summed_BChw[b]), ("latent", "residual", r.residual_BChw[b]),
                                    ("latent", "unscaled", r.unscaled_BChw[b])):
                files[f"spectra/{stem}_{domain}_{kind}.npy"] = npy_bytes(log_spectrum(x))
    return files


def pack_files(files: dict[str, bytes]) -> bytes:
    """Many files as one `.npz` blob (no pickle), for passing between Ray stages."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.frombuffer(v, dtype=np.uint8) for k, v in files.items()})
    return buf.getvalue()


def unpack_files(blob: bytes) -> dict[str, bytes]:
    """Inverse of `pack_files`."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k].tobytes() for k in z.files}


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_item(out_dir: str | Path, name: str, files: dict[str, bytes], config: dict) -> Path:
    """Write one item's files and its config.json; returns the item folder."""
    folder = Path(out_dir) / name
    for rel, data in files.items():
        write_bytes_atomic(folder / rel, data)
    write_json(folder / "config.json", config)
    return folder
