"""Sizes of a VAR model (tokenizer + transformer) as frozen dataclasses, with named presets.

One config describes the whole generator: the multi-scale residual VQ tokenizer
(`VQVAEConfig`, FoundationVision's `vae_ch160v4096z32` layout) and the next-scale
transformer (`VARConfig`, FoundationVision's `var_d16` layout). Presets: `tiny` (tests),
`demo-var` (the shipped text-to-image shapes model), `demo-var-digits` (the shipped
class-conditional digits model), `benchmark` (compute bound on a CPU), `var-d16` (the
real 256-px ImageNet model).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ecad_ray.errors import UserError

VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR-256's scale schedule (680 tokens)


@dataclass(frozen=True)
class VQVAEConfig:
    """Multi-scale residual VQ tokenizer: a conv encoder/decoder around one shared codebook."""

    in_channels: int = 3  # image channels; outputs are RGB so metrics and viewers just work
    ch: int = 160  # base conv width; FoundationVision's VAE uses 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiplier per level; len-1 = downsamplings
    num_res_blocks: int = 2  # resnet blocks per level (decoder uses one more)
    z_channels: int = 32  # latent / codebook vector width (Cvae)
    vocab_size: int = 4096  # codebook entries shared by every scale
    num_groups: int = 32  # GroupNorm groups; 32 in the real model, fewer for tiny widths
    using_sa: bool = True  # self-attention at the lowest resolution level
    using_mid_sa: bool = True  # self-attention in the middle block
    beta: float = 0.25  # commitment loss weight (training only)
    quant_resi: float = 0.5  # Phi residual ratio: h*(1-r) + conv(h)*r
    share_quant_resi: int = 4  # Phi convs shared across scales (picked by relative depth)

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along one side."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class VARConfig:
    """Block-causal next-scale transformer over the tokenizer's multi-scale token maps."""

    depth: int = 16  # transformer blocks; VAR ties width and heads to it (d16 -> 1024, 16)
    embed_dim: int = 1024  # residual stream width C
    num_heads: int = 16  # attention heads
    mlp_ratio: float = 4.0  # FFN hidden = mlp_ratio * C
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS  # token-map widths, one per scale
    num_classes: int = 1000  # class-conditional label count (one more row = CFG null class)
    cond: str = "class"  # "class" (label embedding) or "text" (projected prompt embedding)
    text_dim: int = 64  # width of the prompt vector when cond == "text"
    text_encoder: str = "hash"  # "demo" (the demo DiT's T5), a hub id / folder, or "hash" (no weights)
    text_pooling: str = "mean"  # "mean" of the encoder's states, or "tokens": the first text_tokens side by side
    text_tokens: int = 16  # tokens kept (padded / truncated) before pooling
    attn_l2_norm: bool = True  # cosine attention with a learned per-head scale, as var_d16
    norm_eps: float = 1e-6  # LayerNorm epsilon
    class_names: tuple[str, ...] = ()  # optional names; a prompt naming one picks that class

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.embed_dim // self.num_heads

    @property
    def seq_len(self) -> int:
        """Tokens over all scales (L)."""
        return sum(pn * pn for pn in self.patch_nums)


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn at each scale."""

    cfg: float = 4.0  # classifier-free guidance; ramps linearly from 0 at scale 0 to cfg at the last
    top_k: int = 900  # keep the k most likely tokens (0 = off); clipped to the vocab
    top_p: float = 0.95  # nucleus sampling mass (0 = off)


@dataclass(frozen=True)
class VarModelConfig:
    """A whole VAR generator: tokenizer + transformer + default sampling + image size."""

    name: str
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    var: VARConfig = field(default_factory=VARConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    @property
    def image_size(self) -> int:
        """Side of the generated square image in pixels."""
        return self.var.patch_nums[-1] * self.vqvae.downsample

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VarModelConfig":
        """Inverse of `to_dict`; unknown keys are an error so typos do not pass silently."""
        try:
            vq = VQVAEConfig(**_tuples(data.get("vqvae", {})))
            var = VARConfig(**_tuples(data.get("var", {})))
            sampling = SamplingConfig(**data.get("sampling", {}))
        except TypeError as err:
            raise UserError(f"VAR config: {err}") from err
        return cls(name=data.get("name", "var"), vqvae=vq, var=var, sampling=sampling)

    def to_json(self) -> str:
        """Pretty JSON text of `to_dict`."""
        return json.dumps(self.to_dict(), indent=2)

    def fingerprint(self) -> str:
        """Short hash of the whole config but its name: what a pruning policy trained on this model
        is bound to (two models with the same scales but another tokenizer, transformer or
        condition differ; a renamed copy does not)."""
        data = self.to_dict()
        data.pop("name")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def tiny_config() -> VarModelConfig:
    """A random-weight model that runs in milliseconds: for tests."""
    return VarModelConfig(
        name="tiny",
        vqvae=VQVAEConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=8, vocab_size=32, num_groups=4),
        var=VARConfig(depth=2, embed_dim=32, num_heads=2, patch_nums=(1, 2, 3, 4), num_classes=10,
                      class_names=DIGIT_NAMES),
        sampling=SamplingConfig(cfg=2.0, top_k=0, top_p=0.0),
    )


def demo_config() -> VarModelConfig:
    """`demo-var`: text-to-image on the demo's shapes captions (32 px, 8x8 tokens), conditioned
    on the demo DiT's T5 encoder; trained by `ecad-ray var train` and shipped in the package."""
    return VarModelConfig(
        name="demo-var",
        vqvae=VQVAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=16, vocab_size=512, num_groups=8),
        var=VARConfig(depth=6, embed_dim=128, num_heads=4, patch_nums=(1, 2, 3, 4, 6, 8), cond="text",
                      text_encoder="demo", text_pooling="tokens", text_tokens=16, text_dim=16 * 128),
        sampling=SamplingConfig(cfg=3.0, top_k=0, top_p=0.4),
    )


def demo_digits_config() -> VarModelConfig:
    """`demo-var-digits`: the class-conditional digits model (16 px), shipped in the package."""
    return VarModelConfig(
        name="demo-var-digits",
        vqvae=VQVAEConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=16, vocab_size=128, num_groups=4),
        var=VARConfig(depth=4, embed_dim=64, num_heads=4, patch_nums=(1, 2, 3, 4, 6, 8), num_classes=10,
                      class_names=DIGIT_NAMES),
        sampling=SamplingConfig(cfg=2.0, top_k=0, top_p=0.9),
    )


def benchmark_config() -> VarModelConfig:
    """VAR-256's ten scales with a transformer big enough to be compute bound on one CPU core."""
    return VarModelConfig(
        name="benchmark",
        vqvae=VQVAEConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=32, vocab_size=4096, num_groups=4),
        var=VARConfig(depth=8, embed_dim=512, num_heads=8, patch_nums=VAR_PATCH_NUMS, num_classes=1000),
        sampling=SamplingConfig(cfg=4.0, top_k=900, top_p=0.95),
    )


def var_d16_config() -> VarModelConfig:
    """FoundationVision's VAR-d16 (310M) with `vae_ch160v4096z32`: 256-px ImageNet."""
    return VarModelConfig(name="var-d16")


PRESETS = {"tiny": tiny_config, "demo-var": demo_config, "demo-var-digits": demo_digits_config, "benchmark": benchmark_config, "var-d16": var_d16_config}


def preset(name: str, **var_overrides: Any) -> VarModelConfig:
    """A named preset, optionally with `VARConfig` fields replaced."""
    if name not in PRESETS:
        raise UserError(f"VAR preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    return replace(cfg, var=replace(cfg.var, **var_overrides)) if var_overrides else cfg
