"""Sizes of an Infinity generator (bitwise tokenizer + text-conditioned transformer) and presets.

Infinity (FoundationVision/Infinity) predicts, at each scale of its schedule, every bit of every
latent cell of a binary spherical quantiser (BSQ): `codebook_dim` bits per cell, 2 logits per
bit. The 1024-px schedule (`1M`, square) has 13 map widths, 1 .. 64; the smaller pixel budgets
use its first 7, 10 or 12 (their `dynamic_resolution_h_w[1.0]`). Only square images are
supported here. Presets: `infinity-tiny` (random weights, runs on a CPU in a fraction of a
second, the golden fixture's shapes) and `infinity-2b` (the released `infinity_2b_reg.pth` with
`infinity_vae_d32reg.pth` and Flan-T5-XL).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ecad_ray.errors import UserError

SCALES_1M = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)  # square 1024-px schedule (10,521 tokens)
PIXEL_BUDGETS = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}  # scales of SCALES_1M each budget uses


def scale_schedule(pixel_budget: str) -> tuple[int, ...]:
    """Map widths of Infinity's square schedule for a pixel budget (`0.06M`, `0.25M`, `0.60M`, `1M`)."""
    if pixel_budget not in PIXEL_BUDGETS:
        raise UserError(f"Infinity pixel budget {pixel_budget!r}: choose one of {', '.join(PIXEL_BUDGETS)}")
    return SCALES_1M[: PIXEL_BUDGETS[pixel_budget]]


@dataclass(frozen=True)
class BSQVAEConfig:
    """Infinity's bitwise tokenizer: a FLUX-style conv encoder/decoder around a BSQ quantiser."""

    codebook_dim: int = 32  # bits per latent cell (d); the latent has d channels
    ch: int = 128  # base conv width (GroupNorm needs a multiple of 32 or 24)
    ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)  # width multiplier per level
    num_res_blocks: int = 2  # resnet blocks per encoder level (decoder: one more)
    patch_size: int = 16  # pixels per latent cell along one side (2 ** downsamplings)
    in_channels: int = 3


@dataclass(frozen=True)
class InfinityConfig:
    """The transformer: adaLN (shared) blocks of self-attention with 2-D RoPE, cross-attention to
    the text, and an FFN; a bitwise head (2 logits per bit)."""

    depth: int = 32
    embed_dim: int = 2048
    num_heads: int = 16
    mlp_ratio: float = 4.0  # FFN hidden = round(embed_dim * mlp_ratio / 256) * 256, as theirs
    text_channels: int = 2048  # width of the text encoder's states (Flan-T5-XL: 2048)
    text_maxlen: int = 512  # rows of the learned null text (CFG's unconditional branch)
    text_encoder: str = "google/flan-t5-xl"  # hub id or folder; "hash" = a weight-free stand-in
    scales: tuple[int, ...] = SCALES_1M  # map widths, one per scale
    rope_grid: int = 64  # RoPE positions are spread over the 1M schedule's last width (their mode 2)
    block_chunks: int = 8  # checkpoint layout: block_chunks.C.module.J (1 = blocks.N)
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        """FFN width, rounded to a multiple of 256 as Infinity's blocks do."""
        return round(self.embed_dim * self.mlp_ratio / 256) * 256

    @property
    def seq_len(self) -> int:
        """Tokens over all scales."""
        return sum(w * w for w in self.scales)


@dataclass(frozen=True)
class InfinitySampling:
    """How bits are drawn: Infinity's defaults (cfg 3 on the logits at every scale, temperature
    0.5, top-k 900 and top-p 0.97 over each bit's two logits)."""

    cfg: float = 3.0  # guidance on the logits, the same at every scale (1 = no CFG rows)
    tau: float = 0.5  # logits are divided by tau
    top_k: int = 900
    top_p: float = 0.97


@dataclass(frozen=True)
class InfinityModelConfig:
    """A whole Infinity generator."""

    name: str
    vae: BSQVAEConfig = field(default_factory=BSQVAEConfig)
    transformer: InfinityConfig = field(default_factory=InfinityConfig)
    sampling: InfinitySampling = field(default_factory=InfinitySampling)
    family: str = "infinity"

    @property
    def image_size(self) -> int:
        """Side of the generated square image in pixels."""
        return self.transformer.scales[-1] * self.vae.patch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def to_json(self) -> str:
        """Pretty JSON of `to_dict`."""
        return json.dumps(self.to_dict(), indent=2)

    def fingerprint(self) -> str:
        """Short hash of everything but the name (what a trained policy is bound to)."""
        data = self.to_dict()
        data.pop("name")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def tiny_config() -> InfinityModelConfig:
    """`infinity-tiny`: the golden fixture's shapes (4 layers of width 64, 8 bits, 7 scales, 32 px)."""
    return InfinityModelConfig(
        name="infinity-tiny",
        vae=BSQVAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1), num_res_blocks=1, patch_size=2),
        transformer=InfinityConfig(depth=4, embed_dim=64, num_heads=2, text_channels=128, text_maxlen=8,
                                   text_encoder="hash", scales=scale_schedule("0.06M"), block_chunks=2),
    )


def infinity_2b_config() -> InfinityModelConfig:
    """`infinity-2b`: 32 layers of width 2048, 16 heads, the d32 BSQ tokenizer, 1024 px, 13 scales."""
    return InfinityModelConfig(name="infinity-2b")


PRESETS = {"infinity-tiny": tiny_config, "infinity-2b": infinity_2b_config}


def preset(name: str, **transformer_overrides: Any) -> InfinityModelConfig:
    """A named preset, optionally with `InfinityConfig` fields replaced."""
    if name not in PRESETS:
        raise UserError(f"Infinity preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    if transformer_overrides:
        cfg = replace(cfg, transformer=replace(cfg.transformer, **transformer_overrides))
    return cfg
