"""Small fake generate runs (PIL images + results.parquet) and a tiny CLIP for metric tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32


def base_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random uint8 images (low-frequency colour fields upsampled, so shifts matter)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.BICUBIC)))
    return images


def shifted(image: np.ndarray, pixels: int = 4) -> np.ndarray:
    """The image rolled sideways: same content, displaced."""
    return np.roll(image, pixels, axis=1)


def write_run(run_dir: Path, schedule: str, images: list[np.ndarray], seconds: float, model: str = "demo",
              partitions: list[str] | None = None, seed: int = 7) -> Path:
    """A run directory written with generate's own writers (PNG names, results.parquet), plus run.json."""
    from ecad_ray.records import image_name, write_png, write_results

    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        rel = f"images/{image_name(i, f'p{i}', seed)}"
        row = {
            "prompt_index": i, "prompt_id": f"p{i}", "prompt": f"a red circle number {i}",
            "negative_prompt": "", "partition": partitions[i] if partitions else "",
            "seed": seed, "model": model, "schedule": schedule, "height": SIZE, "width": SIZE,
            "steps": 20, "guidance_scale": 4.5, "image_path": rel, "seconds_per_image": seconds,
        }
        write_png(image, run_dir / rel, row)
        rows.append(row)
    write_results(rows, run_dir / "results.parquet")
    (run_dir / "run.json").write_text(json.dumps({"model": model, "schedule": schedule}))
    return run_dir


def tiny_clip(folder: Path) -> Path:
    """A random-weight CLIP (1 layer, 32 wide, 32 px) with tokenizer + processor, saved to `folder`."""
    import ecad_ray  # noqa: F401
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    images = CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=SIZE, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def broken_features(x_BCHW):
    """A FID feature extractor that fails on every batch (for failure-isolation tests)."""
    raise RuntimeError("extractor exploded")
