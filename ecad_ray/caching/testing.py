"""Tiny PixArt / FLUX models and random schedules for tests and benchmarks (random weights, CPU).

Sizes follow the project's environment notes: they build offline in well under a second.
"""

from __future__ import annotations

import random

import torch

from ecad_ray.caching.schedule import Schedule, make_schedule
from ecad_ray.caching.spec import TransformerSpec


def tiny_pixart_transformer(num_layers: int = 2, heads: int = 2, head_dim: int = 16, sample_size: int = 16,
                            caption_channels: int = 32, seed: int = 0):
    """A PixArt-α transformer with random weights (out_channels 8: learned sigma, like PixArt)."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(
        sample_size=sample_size, num_layers=num_layers, patch_size=2, attention_head_dim=head_dim,
        num_attention_heads=heads, caption_channels=caption_channels, in_channels=4, out_channels=8,
        cross_attention_dim=heads * head_dim, norm_type="ada_norm_single", num_embeds_ada_norm=1000,
    )
    _randomize_zero_inits(model, seed)
    return model.eval()


def tiny_flux_transformer(num_layers: int = 1, num_single_layers: int = 2, seed: int = 0):
    """A FLUX transformer with random weights and guidance embedding (like FLUX.1-dev)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8], guidance_embeds=True,
    )
    _randomize_zero_inits(model, seed)
    return model.eval()


def _randomize_zero_inits(model: torch.nn.Module, seed: int) -> None:
    """diffusers zero-initialises some output layers; random values make every path matter."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def tiny_flux_pipeline(num_layers: int = 1, num_single_layers: int = 2, seed: int = 0):
    """A `FluxPipeline` without text encoders (pass `prompt_embeds` / `pooled_prompt_embeds`)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                        layers_per_block=1, latent_channels=1, norm_num_groups=8, sample_size=32).eval()
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None,
                        transformer=tiny_flux_transformer(num_layers, num_single_layers, seed))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_schedule(spec: TransformerSpec, steps: int, p_recompute: float = 0.5, seed: int = 0) -> Schedule:
    """Each (step, block, sub-layer) recomputed with probability `p_recompute` (step 0 too)."""
    rng = random.Random(seed)
    bits = {
        s: {b: {c: rng.random() < p_recompute for c in spec.components_of(b)} for b in spec.block_names}
        for s in range(steps)
    }
    return make_schedule(f"random_{seed}", bits, spec.num_blocks, steps,
                         num_single_blocks=spec.schedule_num_single_blocks)


@torch.no_grad()
def pixart_denoise(transformer, steps: int, batch: int = 1, cfg: bool = True, guidance: float = 4.5,
                   text_len: int = 8, seed: int = 0) -> torch.Tensor:
    """A plain Euler-like loop over a PixArt transformer, as its pipeline drives it."""
    g = torch.Generator().manual_seed(seed)
    size = transformer.config.sample_size
    caption = transformer.config.caption_channels
    latents = torch.randn(batch, 4, size, size, generator=g)
    embeds = torch.randn((2 if cfg else 1) * batch, text_len, caption, generator=g)
    mask = torch.ones(embeds.shape[:2])
    for i in range(steps):
        t = 999 - i * (999 // steps)
        x = torch.cat([latents, latents]) if cfg else latents
        out = transformer(x, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                          timestep=torch.tensor([t]).expand(x.shape[0]),
                          added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        eps = out[:, :4]
        if cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        latents = latents - eps / steps
    return latents
