"""What differs between model families: which embeddings the text half produces, and how the
denoising half is called with them.

PixArt keeps prompt and negative-prompt embeddings with their attention masks (classifier-free
guidance needs both); FLUX keeps the T5 sequence and the pooled CLIP vector. Each image gets
its own `torch.Generator`, so its starting noise depends on its seed alone, never on its
position in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ecad_ray.errors import UserError


@dataclass(frozen=True)
class Family:
    """Embedding keys a family stores per prompt, and the pipeline arguments they feed."""

    name: str
    keys: tuple[str, ...]
    uses_negative_prompt: bool


PIXART = Family(
    "pixart",
    ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask"),
    uses_negative_prompt=True,
)
FLUX = Family("flux", ("prompt_embeds", "pooled_prompt_embeds"), uses_negative_prompt=False)
FAMILIES = {f.name: f for f in (PIXART, FLUX)}


def family_of(name: str) -> Family:
    """The family adapter for a `ModelSpec.family`; plain diffusers pipelines have none here."""
    if name not in FAMILIES:
        raise UserError(
            f"model family {name!r} has no embeddings pipeline; `generate` supports PixArt and FLUX "
            "models (use `ecad-ray image` for other diffusers pipelines)"
        )
    return FAMILIES[name]


@torch.no_grad()
def encode_prompts(
    pipe, family: Family, prompts: list[str], negative_prompts: list[str], max_sequence_length: int
) -> dict[str, torch.Tensor]:
    """Encode a batch of prompts into the family's embedding tensors (batch dimension first)."""
    device = pipe.text_encoder.device
    if family is PIXART:
        embeds, mask, neg_embeds, neg_mask = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=True,
            negative_prompt=negative_prompts,
            device=device,
            clean_caption=False,
            max_sequence_length=max_sequence_length,
        )
        return {
            "prompt_embeds": embeds,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": neg_embeds,
            "negative_prompt_attention_mask": neg_mask,
        }
    embeds, pooled, _text_ids = pipe.encode_prompt(
        prompts, prompt_2=None, device=device, max_sequence_length=max_sequence_length
    )
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}


@torch.no_grad()
def generate_images(
    pipe,
    family: Family,
    embeddings: dict[str, torch.Tensor],
    seeds: list[int],
    *,
    height: int,
    width: int,
    steps: int,
    guidance_scale: float,
) -> np.ndarray:
    """Denoise one image per seed from precomputed embeddings; returns uint8 images (N, H, W, 3).

    Pixels must not depend on the batch: CPU kernels take a different path for a single row
    (gemv, batch-1 convolution), so a lone image without CFG is computed as a pair and the VAE
    decodes one image at a time (`enable_slicing`).
    """
    uses_cfg = family is PIXART and guidance_scale > 1.0
    if len(seeds) == 1 and not uses_cfg:
        pair = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in embeddings.items()}
        return generate_images(
            pipe, family, pair, seeds * 2, height=height, width=width, steps=steps, guidance_scale=guidance_scale
        )[:1]
    pipe.vae.enable_slicing()
    device = pipe._execution_device
    dtype = pipe.transformer.dtype
    kwargs = {k: _to(v, device, dtype) for k, v in embeddings.items()}
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    common = dict(
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generators,
        output_type="np",
    )
    if family is PIXART:
        out = pipe(prompt=None, negative_prompt=None, use_resolution_binning=False, **common, **kwargs)
    else:
        out = pipe(prompt=None, **common, **kwargs)
    return (np.clip(out.images, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _to(tensor: torch.Tensor, device, dtype) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)
