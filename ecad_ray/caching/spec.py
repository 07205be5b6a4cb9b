"""What the caching code needs to know about a transformer: family, block counts and sizes.

A `TransformerSpec` is built from a diffusers transformer config (a dict, a loaded model, or
one of the configs shipped in `model_configs/`), so schedules can be validated and their cost
counted without weights. Image size and text length are sampling settings, not part of the
diffusers config, so they are fields here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ecad_ray.errors import UserError

CONFIG_DIR = Path(__file__).with_name("model_configs")

# Sub-layer names per block kind, in the order a block runs them.
PIXART_COMPONENTS = ("attn1", "attn2", "ff")
FLUX_DOUBLE_COMPONENTS = ("full_attn", "full_ff", "full_ff_context")
FLUX_SINGLE_COMPONENTS = ("single_proj_mlp", "single_attn", "single_proj_out")
SINGLE_PREFIX = "single_"

# ECAD's published PixArt MACs (calflops) fed PixArt-α's 120 T5 tokens to every PixArt model,
# PixArt-Σ (which runs 300) included: its Σ files carry exactly the α numbers. FLUX was counted
# at its own 512. See `ecad_ray.caching.macs.CONVENTIONS`.
ECAD_PIXART_TEXT_LEN = 120
# Text tokens each PixArt pipeline encodes prompts to (its `max_sequence_length` default).
PIPELINE_TEXT_LEN = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}


@dataclass(frozen=True)
class TransformerSpec:
    """Shapes of a PixArt or FLUX transformer at one sampling setting."""

    family: str  # "pixart" | "flux": picks component names and the cost formulas
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
    def block_names(self) -> tuple[str, ...]:
        """Every block key a schedule must hold, in run order."""
        singles = tuple(f"{SINGLE_PREFIX}{i}" for i in range(self.num_single_blocks))
        return tuple(str(i) for i in range(self.num_blocks)) + singles

    def components_of(self, block: str) -> tuple[str, ...]:
        """The cacheable sub-layers of block `block` (a schedule key)."""
        if self.family == "pixart":
            return PIXART_COMPONENTS
        return FLUX_SINGLE_COMPONENTS if block.startswith(SINGLE_PREFIX) else FLUX_DOUBLE_COMPONENTS

    def at_size(self, height: int, width: int, text_len: int | None = None) -> "TransformerSpec":
        """The same model sampled at another image size (and optionally text length)."""
        tokens = image_tokens(self.family, height, width, self.patch_size, self.vae_scale_factor)
        return replace(
            self,
            height=height,
            width=width,
            image_tokens=tokens,
            text_len=self.text_len if text_len is None else text_len,
        )


def image_tokens(family: str, height: int, width: int, patch_size: int, vae_scale_factor: int = 8) -> int:
    """Transformer tokens of one image: PixArt patchifies the latent, FLUX packs 2x2 latents."""
    lh, lw = height // vae_scale_factor, width // vae_scale_factor
    if family == "flux":
        return (lh // 2) * (lw // 2)
    return (lh // patch_size) * (lw // patch_size)


def family_of_config(config: dict[str, Any]) -> str:
    """`flux` for FLUX configs (single-stream blocks), `pixart` for PixArt ones."""
    cls = str(config.get("_class_name", ""))
    if "num_single_layers" in config or cls.startswith("Flux"):
        return "flux"
    if cls.startswith("PixArt") or config.get("norm_type") == "ada_norm_single" or "caption_channels" in config:
        return "pixart"
    raise UserError(f"transformer config {cls or '?'}: not a PixArt or FLUX transformer; caching supports those two")


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
    patch = int(config.get("patch_size") or (1 if family == "flux" else 2))
    in_ch = int(config.get("in_channels", 4))
    out_ch = config.get("out_channels") or in_ch
    common = dict(
        family=family,
        num_blocks=int(config["num_layers"]),
        hidden=heads * head_dim,
        num_heads=heads,
        head_dim=head_dim,
        in_channels=in_ch,
        out_channels=int(out_ch),
        patch_size=patch,
        image_tokens=image_tokens(family, height, width, patch, vae_scale_factor),
        text_len=text_len,
        height=height,
        width=width,
        vae_scale_factor=vae_scale_factor,
        ecad_mac_batch=ecad_mac_batch,
        name=name,
        ecad_text_len=ecad_text_len,
    )
    if family == "flux":
        return TransformerSpec(
            num_single_blocks=int(config.get("num_single_layers", 0)),
            joint_attention_dim=int(config.get("joint_attention_dim", 4096)),
            pooled_projection_dim=int(config.get("pooled_projection_dim", 768)),
            guidance_embeds=bool(config.get("guidance_embeds", False)),
            **common,
        )
    return TransformerSpec(
        num_single_blocks=0,
        caption_channels=int(config.get("caption_channels") or 0),
        cross_attention_dim=int(config.get("cross_attention_dim") or heads * head_dim),
        **common,
    )


def shipped_names() -> list[str]:
    """Names of the configs shipped with the package (`pixart-alpha-256`, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@lru_cache(maxsize=None)
def shipped_config(name: str) -> dict[str, Any]:
    """The raw shipped JSON (transformer config plus ECAD's sampling setting)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"--model {name}: no shipped transformer config; known: {', '.join(shipped_names())}")
    return json.loads(path.read_text())


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
        ecad_text_len=raw.get("ecad_text_len", ECAD_PIXART_TEXT_LEN if family == "pixart" else raw["text_len"]),
    )


def spec_from_transformer(transformer, height: int | None = None, width: int | None = None, text_len: int | None = None) -> TransformerSpec:
    """Spec of a loaded diffusers transformer; sizes default to the model's native ones."""
    config = dict(transformer.config)
    family = family_of_config(config)
    if family == "pixart":
        native = int(config.get("sample_size") or 32) * 8
        text = text_len or 120
    else:
        native, text = 256, text_len or 512
    return spec_from_config(config, height or native, width or native, text, name=type(transformer).__name__)


def pipeline_text_len(folder: Path) -> int:
    """T5 tokens a PixArt pipeline folder encodes prompts to: 300 for Σ, else α's 120.

    The transformer config cannot tell α from Σ; the pipeline class in `model_index.json` can.
    A bare transformer folder (no `model_index.json`) is taken to be α's.
    """
    index = folder / "model_index.json"
    if index.is_file():
        cls = str(json.loads(index.read_text()).get("_class_name", ""))
        return PIPELINE_TEXT_LEN.get(cls, ECAD_PIXART_TEXT_LEN)
    return ECAD_PIXART_TEXT_LEN


def resolve_spec(model: str) -> TransformerSpec:
    """`--model` value to a spec: a shipped config name, `demo`, or a local pipeline folder."""
    if model in shipped_names():
        return shipped_spec(model)
    if model == "demo":
        from ecad_ray.models.demo import demo_config

        cfg = demo_config()
        t, v = cfg["transformer"], cfg["vae"]
        scale = 2 ** (len(v["block_out_channels"]) - 1)
        inner = t["num_attention_heads"] * t["attention_head_dim"]
        config = {
            "_class_name": "PixArtTransformer2DModel",
            "num_layers": t["num_layers"],
            "num_attention_heads": t["num_attention_heads"],
            "attention_head_dim": t["attention_head_dim"],
            "patch_size": t["patch_size"],
            "in_channels": v["latent_channels"],
            "out_channels": v["latent_channels"],
            "caption_channels": cfg["text_encoder"]["d_model"],
            "cross_attention_dim": inner,
        }
        return spec_from_config(
            config, cfg["image_size"], cfg["image_size"], cfg["max_sequence_length"], vae_scale_factor=scale, name="demo"
        )
    folder = Path(model).expanduser()
    cfg_path = folder / "transformer" / "config.json"
    if not cfg_path.is_file():
        cfg_path = folder / "config.json"
    if cfg_path.is_file():
        config = json.loads(cfg_path.read_text())
        family = family_of_config(config)
        size = int(config.get("sample_size") or 32) * 8 if family == "pixart" else 256
        if family == "flux":
            return spec_from_config(config, size, size, 512, name=str(folder), ecad_text_len=512)
        return spec_from_config(config, size, size, pipeline_text_len(folder), name=str(folder),
                                ecad_text_len=ECAD_PIXART_TEXT_LEN)
    raise UserError(
        f"--model {model}: unknown model for caching; use demo, {', '.join(shipped_names())}, "
        "or a folder holding transformer/config.json"
    )
