"""PixArt-α / PixArt-Σ (and the PixArt-architecture `demo`): everything ecad-ray asks about them.

PixArt runs classifier-free guidance, so a prompt keeps its embeddings and the negative
prompt's, each with its attention mask. Every transformer block has three cacheable
sub-layers, in run order: self-attention `attn1`, cross-attention `attn2` (text), `ff`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecad_ray.models.families.base import ModelFamily

# schedule component -> attribute of a `BasicTransformerBlock`, in the order the block runs them
SUBLAYERS = {"attn1": "attn1", "attn2": "attn2", "ff": "ff"}

# ECAD's published PixArt MACs (calflops) fed PixArt-α's 120 T5 tokens to every PixArt model,
# PixArt-Σ (which runs 300) included: its Σ files carry exactly the α numbers. See
# `ecad_ray.caching.macs.CONVENTIONS`.
ECAD_PIXART_TEXT_LEN = 120
# Text tokens each PixArt pipeline encodes prompts to (its `max_sequence_length` default).
PIPELINE_TEXT_LEN = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}


class PixArtFamily(ModelFamily):
    """PixArt-α/Σ: T5 text, CFG, adaLN-single transformer blocks with cross-attention."""

    name = "pixart"
    pipeline_classes = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    transformer_class = "PixArtTransformer2DModel"
    embedding_keys = (
        "prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask"
    )
    uses_negative_prompt = True
    reference_model = "pixart-alpha-256"
    size_multiple = 16  # SD VAE 8 x patch 2
    cacheable = True
    self_attention, cross_attention, feed_forward = "attn1", "attn2", "ff"
    default_patch_size = 2
    default_text_len = ECAD_PIXART_TEXT_LEN
    ecad_text_len = ECAD_PIXART_TEXT_LEN

    # -- pipeline calls ---------------------------------------------------------------------
    def prompt_kwargs(self, max_sequence_length: int | None) -> dict[str, Any]:
        """ECAD's text settings: its T5 length, captions not cleaned (no bs4/ftfy pass)."""
        return {"clean_caption": False, "max_sequence_length": max_sequence_length}

    def exact_size_kwargs(self) -> dict[str, Any]:
        """No aspect-ratio binning: draw the asked size, not the nearest trained bin."""
        return {"use_resolution_binning": False}

    def no_prompt_kwargs(self) -> dict[str, Any]:
        """Neither prompt nor negative prompt: both come as embeddings."""
        return {"prompt": None, "negative_prompt": None}

    def encode_prompts(self, pipe, prompts: list[str], negative_prompts: list[str], max_sequence_length: int) -> dict:
        """Prompt and negative-prompt embeddings with their masks (CFG needs both)."""
        embeds, mask, neg_embeds, neg_mask = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=True,
            negative_prompt=negative_prompts,
            device=pipe.text_encoder.device,
            clean_caption=False,
            max_sequence_length=max_sequence_length,
        )
        return {
            "prompt_embeds": embeds,
            "prompt_attention_mask": mask,
            "negative_prompt_embeds": neg_embeds,
            "negative_prompt_attention_mask": neg_mask,
        }

    def folder_defaults(self, pipeline_class: str, transformer_config: dict, vae_scale: int) -> dict[str, Any]:
        """A PixArt folder (any PixArt pipeline class) is sampled at its transformer's trained size."""
        if "sample_size" in transformer_config and pipeline_class.startswith("PixArt"):
            side = int(transformer_config["sample_size"]) * vae_scale
            return {"height": side, "width": side}
        return {}

    # -- transformer shapes -----------------------------------------------------------------
    def matches_config(self, config: dict[str, Any]) -> bool:
        """PixArt transformers: the class name, adaLN-single norms or a caption projection."""
        cls = str(config.get("_class_name", ""))
        return cls.startswith("PixArt") or config.get("norm_type") == "ada_norm_single" or "caption_channels" in config

    def native_size(self, config: dict[str, Any]) -> int:
        """The trained sample size (latent pixels) times the SD VAE's 8."""
        return int(config.get("sample_size") or 32) * 8

    def folder_text_len(self, folder: Path) -> int:
        """T5 tokens a PixArt pipeline folder encodes prompts to: 300 for Σ, else α's 120.

        The transformer config cannot tell α from Σ; the pipeline class in `model_index.json` can.
        A bare transformer folder (no `model_index.json`) is taken to be α's.
        """
        index = folder / "model_index.json"
        if index.is_file():
            cls = str(json.loads(index.read_text()).get("_class_name", ""))
            return PIPELINE_TEXT_LEN.get(cls, ECAD_PIXART_TEXT_LEN)
        return ECAD_PIXART_TEXT_LEN

    def spec_fields(self, config: dict[str, Any], hidden: int) -> dict[str, Any]:
        """T5 width into the caption projection and the cross-attention key/value width."""
        return {
            "num_single_blocks": 0,
            "caption_channels": int(config.get("caption_channels") or 0),
            "cross_attention_dim": int(config.get("cross_attention_dim") or hidden),
        }

    # -- caching ----------------------------------------------------------------------------
    def components_of(self, block: str) -> tuple[str, ...]:
        """`attn1`, `attn2`, `ff` in every block."""
        return tuple(SUBLAYERS)

    def sublayer_modules(self, transformer) -> dict[tuple[str, str], Any]:
        """The three sub-layers of each of `transformer.transformer_blocks`."""
        return {
            (str(i), comp): getattr(block, attr)
            for i, block in enumerate(transformer.transformer_blocks)
            for comp, attr in SUBLAYERS.items()
        }

    # -- costs ------------------------------------------------------------------------------
    def sublayer_macs(self, spec, attention_products: bool = False) -> dict[str, int]:
        """q/k/v/out of self-attention, q/out on the image and k/v on the text, the 4x MLP."""
        d, n, t = spec.hidden, spec.image_tokens, spec.text_len
        f = spec.ff_mult * d
        return {
            "attn1": 4 * n * d * d + (2 * n * n * d if attention_products else 0),  # q, k, v, out
            "attn2": 2 * n * d * d + 2 * t * spec.cross_attention_dim * d  # q/out on image, k/v on text
            + (2 * n * t * d if attention_products else 0),
            "ff": 2 * n * d * f,
        }

    def always_macs(self, spec) -> int:
        """Timestep MLP and adaLN-single modulation, caption projection, patch embed, output."""
        d, n, t = spec.hidden, spec.image_tokens, spec.text_len
        p2 = spec.patch_size**2
        timestep = 256 * d + d * d + d * 6 * d  # sinusoid MLP + adaLN-single modulation
        caption = t * (spec.caption_channels * d + d * d)  # two-layer caption projection
        patch = n * spec.in_channels * p2 * d
        out = n * d * p2 * spec.out_channels
        return timestep + caption + patch + out

    def output_elements(self, spec, component: str) -> int:
        """Every sub-layer outputs one vector per image token."""
        return spec.image_tokens * spec.hidden


PIXART = PixArtFamily()
