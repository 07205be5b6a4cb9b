"""What the caching code needs to know about a transformer: family, block counts and sizes.

A `TransformerSpec` is built from a diffusers transformer config (a dict, a loaded model, or
a registry model's shipped config, `ecad_ray.models.registry.shipped_config`), so schedules can
be validated and their cost counted without weights. Image size and text length are sampling
settings, not part of the diffusers config, so they are fields here too. Everything that
differs between PixArt and FLUX is asked of the model family (`ecad_ray.models.families`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ecad_ray.errors import UserError
from ecad_ray.models import demo
from ecad_ray.models.families import ModelFamily, family_named, family_of_config
from ecad_ray.models.registry import shipped_config, shipped_names


@dataclass(frozen=True)
class TransformerSpec:
    """Shapes of a PixArt or FLUX transformer at one sampling setting."""

    family: str  # "pixart" | "flux": the model family (`model_family`) that names components and costs them
    num_blocks: int  # PixArt blocks, or FLUX double-stream blocks
    num_single_blocks: int  # FLUX single-stream blocks; 0 for PixArt
    hidden: int  # inner width (heads x head_dim)
    num_heads: int
    head_dim: int
    in_channels: int  # latent channels entering the patch embedding
    out_channels: int  # channels per patch pixel leaving proj_out
    patch_size: int
    image_tokens: int  # tokens of one image at `height` x `width`
    text_len: int  # text tokens the transformer attends to (T5 length): what the model really runs
    caption_channels: int = 0  # PixArt: T5 width fed to caption_projection
    cross_attention_dim: int = 0  # PixArt: width of attn2 keys/values input
    joint_attention_dim: int = 0  # FLUX: T5 width fed to context_embedder
    pooled_projection_dim: int = 0  # FLUX: CLIP pooled width
    guidance_embeds: bool = False  # FLUX.1-dev embeds the guidance scale
    ff_mult: int = 4  # feed-forward / single-block MLP width multiple
    height: int = 256
    width: int = 256
    vae_scale_factor: int = 8  # image pixels per latent pixel
    ecad_mac_batch: int = 2  # samples per step ECAD's calflops count included (see docs/caching.md)
    name: str = ""  # shipped config name or hub id, for messages
    ecad_text_len: int | None = None  # text tokens ECAD's published MACs assume, if known (PixArt: 120)

    @property
    def model_family(self) -> ModelFamily:
        """The family object: sub-layer names, token counts and cost formulas."""
        return family_named(self.family)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Every block key a schedule must hold, in run order."""
        return self.model_family.block_names(self.num_blocks, self.num_single_blocks)

    @property
    def schedule_num_single_blocks(self) -> int | None:
        """`num_single_blocks` as a schedule for this model carries it (None where the family has none)."""
        return self.num_single_blocks if self.model_family.has_single_blocks else None

    def components_of(self, block: str) -> tuple[str, ...]:
        """The cacheable sub-layers of block `block` (a schedule key)."""
        return self.model_family.components_of(block)

    def at_size(self, height: int, width: int, text_len: int | None = None) -> "TransformerSpec":
        """The same model sampled at another image size (and optionally text length)."""
        tokens = self.model_family.image_tokens(height, width, self.patch_size, self.vae_scale_factor)
        return replace(
            self,
            height=height,
            width=width,
            image_tokens=tokens,
            text_len=self.text_len if text_len is None else text_len,
        )


def spec_from_config(
    config: dict[str, Any],
    height: int,
    width: int,
    text_len: int,
    vae_scale_factor: int = 8,
    ecad_mac_batch: int = 2,
    name: str = "",
    ecad_text_len: int | None = None,
) -> TransformerSpec:
    """Build a spec from a diffusers transformer config dict and a sampling setting.

    `ecad_text_len` is the text length ECAD's published MACs used for this model, when it is
    known (shipped configs, PixArt pipeline folders); None means only the model's own count exists.
    """
    family = family_of_config(config)
    heads = int(config["num_attention_heads"])
    head_dim = int(config["attention_head_dim"])
    patch = int(config.get("patch_size") or family.default_patch_size)
    in_ch = int(config.get("in_channels", 4))
    out_ch = config.get("out_channels") or in_ch
    return TransformerSpec(
        family=family.name,
        num_blocks=int(config["num_layers"]),
        hidden=heads * head_dim,
        num_heads=heads,
        head_dim=head_dim,
        in_channels=in_ch,
        out_channels=int(out_ch),
        patch_size=patch,
        image_tokens=family.image_tokens(height, width, patch, vae_scale_factor),
        text_len=text_len,
        height=height,
        width=width,
        vae_scale_factor=vae_scale_factor,
        ecad_mac_batch=ecad_mac_batch,
        name=name,
        ecad_text_len=ecad_text_len,
        **family.spec_fields(config, heads * head_dim),
    )


def shipped_spec(name: str) -> TransformerSpec:
    """Spec of a shipped model config at ECAD's sampling setting (256², the model's T5 length).

    ECAD published MACs for every shipped model, so the spec also carries the text length those
    figures assume (`ecad_text_len`: 120 for both PixArts, the model's own for FLUX).
    """
    raw = shipped_config(name)
    family = family_of_config(raw["transformer"])
    return spec_from_config(
        raw["transformer"],
        height=raw["height"],
        width=raw["width"],
        text_len=raw["text_len"],
        vae_scale_factor=raw.get("vae_scale_factor", 8),
        ecad_mac_batch=raw.get("ecad_mac_batch", 2),
        name=name,
        ecad_text_len=raw.get("ecad_text_len", family.ecad_text_len or raw["text_len"]),
    )


def spec_from_transformer(transformer, height: int | None = None, width: int | None = None, text_len: int | None = None) -> TransformerSpec:
    """Spec of a loaded diffusers transformer; sizes default to the model's native ones."""
    config = dict(transformer.config)
    family = family_of_config(config)
    native = family.native_size(config)
    text = text_len or family.default_text_len
    return spec_from_config(config, height or native, width or native, text, name=type(transformer).__name__)


def resolve_spec(model: str) -> TransformerSpec:
    """`--model` value to a spec: a shipped config name, `demo`, or a local pipeline folder."""
    if model in shipped_names():
        return shipped_spec(model)
    if model == "demo":
        cfg = demo.demo_config()
        return spec_from_config(
            demo.transformer_config(cfg), cfg["image_size"], cfg["image_size"], cfg["max_sequence_length"],
            vae_scale_factor=demo.vae_scale_factor(cfg), name="demo",
        )
    folder = Path(model).expanduser()
    cfg_path = folder / "transformer" / "config.json"
    if not cfg_path.is_file():
        cfg_path = folder / "config.json"
    if cfg_path.is_file():
        config = json.loads(cfg_path.read_text())
        family = family_of_config(config)
        size = family.native_size(config)
        text_len = family.folder_text_len(folder)
        return spec_from_config(config, size, size, text_len, name=str(folder),
                                ecad_text_len=family.ecad_text_len or text_len)
    raise UserError(
        f"--model {model}: unknown model for caching; use demo, {', '.join(shipped_names())}, "
        "or a folder holding transformer/config.json"
    )
