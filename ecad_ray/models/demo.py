"""The built-in `demo` model: a PixArt-architecture text-to-image pipeline at toy size.

Every part is a stock diffusers/transformers class (T5 tokenizer and encoder, PixArt
transformer, AutoencoderKL, DPM-Solver scheduler), so everything ecad-ray does to real
PixArt (caching hooks, embeddings, Ray stages) runs on it unchanged, offline, in seconds on a
CPU. Weights come from `demo_assets/weights.safetensors` when present (trained by
`ecad-ray demo train`), otherwise from a seeded random init, so the model is deterministic.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from ecad_ray.models.families import PIXART

ASSETS = Path(__file__).with_name("demo_assets")
CONFIG_PATH = ASSETS / "config.json"
WEIGHTS_PATH = ASSETS / "weights.safetensors"
FAMILY = PIXART  # the demo is a PixArt: its embeddings, calls, schedules and costs are PixArt's
PIPELINE_CLASS = "PixArtAlphaPipeline"


@lru_cache(maxsize=1)
def demo_config() -> dict:
    """The shipped demo configuration (architecture sizes, vocabulary, sampling defaults)."""
    return json.loads(CONFIG_PATH.read_text())


def vae_scale_factor(config: dict | None = None) -> int:
    """Image pixels per latent pixel: the VAE halves the size at every block but the last."""
    config = config or demo_config()
    return 2 ** (len(config["vae"]["block_out_channels"]) - 1)


def transformer_config(config: dict | None = None) -> dict:
    """The demo's `PixArtTransformer2DModel` arguments (a diffusers transformer config)."""
    config = config or demo_config()
    t, v = config["transformer"], config["vae"]
    return {
        "sample_size": config["image_size"] // vae_scale_factor(config),
        "num_layers": t["num_layers"],
        "patch_size": t["patch_size"],
        "attention_head_dim": t["attention_head_dim"],
        "num_attention_heads": t["num_attention_heads"],
        "caption_channels": config["text_encoder"]["d_model"],
        "in_channels": v["latent_channels"],
        "out_channels": v["latent_channels"],
        "cross_attention_dim": t["num_attention_heads"] * t["attention_head_dim"],
        "norm_type": "ada_norm_single",
        "num_embeds_ada_norm": 1000,
    }


def build_tokenizer(config: dict | None = None):
    """A word-level T5 tokenizer built from the config's vocabulary list (no file needed)."""
    from transformers import T5Tokenizer

    config = config or demo_config()
    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{w}" for w in config["vocab"]]
    vocab = [(piece, -float(i)) for i, piece in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=config["max_sequence_length"])


def build_components(config: dict | None = None, weights: Path | None = WEIGHTS_PATH) -> dict:
    """Build every pipeline component; load trained weights if the file exists."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    config = config or demo_config()
    tokenizer = build_tokenizer(config)
    torch.manual_seed(config["seed"])
    te = config["text_encoder"]
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, **te)
    )
    v = config["vae"]
    n_blocks = len(v["block_out_channels"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_blocks,
        up_block_types=("UpDecoderBlock2D",) * n_blocks,
        block_out_channels=tuple(v["block_out_channels"]),
        layers_per_block=v["layers_per_block"],
        latent_channels=v["latent_channels"],
        norm_num_groups=v["norm_num_groups"],
        sample_size=config["image_size"],
        mid_block_add_attention=v.get("mid_block_add_attention", True),
        scaling_factor=v.get("scaling_factor", 0.18215),
    )
    transformer = PixArtTransformer2DModel(**transformer_config(config))
    scheduler = DPMSolverMultistepScheduler(**config["scheduler"])
    components = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "transformer": transformer,
        "scheduler": scheduler,
    }
    if weights is not None and Path(weights).exists():
        load_weights(components, Path(weights))
    for module in (text_encoder, vae, transformer):
        module.eval()
    return components


def load_weights(components: dict, path: Path) -> None:
    """Load a flat safetensors file whose keys are `<component>.<parameter>`."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    for name in ("text_encoder", "vae", "transformer"):
        prefix = name + "."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            components[name].load_state_dict(part, strict=True)


def save_weights(components: dict, path: Path) -> None:
    """Write the trainable components to one safetensors file (the inverse of `load_weights`)."""
    from safetensors.torch import save_file

    state = {}
    for name in ("text_encoder", "vae", "transformer"):
        for key, value in components[name].state_dict().items():
            state[f"{name}.{key}"] = value.detach().cpu().clone()  # clone: T5 ties two keys
    tmp = Path(path).with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"model": "demo"})
    tmp.replace(path)


def encode_captions(tokenizer, text_encoder, captions: list[str], max_length: int):
    """Caption embeddings exactly as `PixArtAlphaPipeline.encode_prompt` makes them.

    Lower-cased and stripped (the pipeline's preprocessing without bs4/ftfy), padded to
    `max_length`, with the padding masked in the encoder. Training uses this so the model
    learns on the same embeddings the pipeline feeds it. Returns (embeds_BLD, mask_BL).
    """
    texts = [c.lower().strip() for c in captions]
    tokens = tokenizer(
        texts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    mask_BL = tokens.attention_mask.to(device)
    embeds_BLD = text_encoder(tokens.input_ids.to(device), attention_mask=mask_BL)[0]
    return embeds_BLD, mask_BL


def build_pipeline(config: dict | None = None, weights: Path | None = WEIGHTS_PATH):
    """The demo as a `PixArtAlphaPipeline`."""
    import diffusers

    return getattr(diffusers, PIPELINE_CLASS)(**build_components(config, weights))


@torch.no_grad()
def sample_images(pipe, captions: list[str], seed: int = 0, batch_size: int = 16,
                  guidance_scale: float | None = None, steps: int | None = None):
    """Generate one 32×32 image per caption as uint8 NHWC (numpy).

    Image i uses its own generator seeded `seed + i`, so an image does not depend on the batch
    it was made in. Sampling settings default to the demo config (DPM-Solver, 20 steps, CFG).
    """
    import numpy as np

    config = demo_config()
    pipe.set_progress_bar_config(disable=True)
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = captions[start:start + batch_size]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        images = pipe(
            **FAMILY.call_kwargs(  # captions not cleaned: training saw lower-cased, stripped ones
                prompt=chunk,
                steps=steps or config["num_inference_steps"],
                guidance_scale=config["guidance_scale"] if guidance_scale is None else guidance_scale,
                height=config["image_size"],
                width=config["image_size"],
                max_sequence_length=config["max_sequence_length"],
            ),
            generator=gens,
        ).images
        out.append(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def save_grid(rows: list, path: Path, scale: int = 3) -> Path:
    """Save rows of equal-size images (each row N x H x W x 3 uint8) as one PNG, upscaled
    `scale` times with 2 px white gaps: the demo's sample and full-vs-cached figures."""
    import numpy as np
    from PIL import Image

    from ecad_ray.atomic import atomic_path

    h, w = rows[0][0].shape[:2]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    cell_h, cell_w = h * scale + 2, w * scale + 2
    canvas = np.full((n_rows * cell_h + 2, n_cols * cell_w + 2, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            big = np.kron(img, np.ones((scale, scale, 1), np.uint8))
            canvas[2 + r * cell_h:2 + r * cell_h + h * scale, 2 + c * cell_w:2 + c * cell_w + w * scale] = big
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    return Path(path)
