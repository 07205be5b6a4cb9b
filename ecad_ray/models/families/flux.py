"""FLUX.1: everything ecad-ray asks about it.

FLUX.1-dev embeds the guidance scale instead of running classifier-free guidance, so a prompt
keeps its T5 sequence and its pooled CLIP vector, and no negative prompt. Its transformer has
double-stream blocks (`"0"`, `"1"`, ...: joint attention, image and text MLPs) and then
single-stream blocks (`"single_0"`, ...: MLP input, attention, one output projection).
"""

from __future__ import annotations

from typing import Any

from ecad_ray.models.families.base import ModelFamily

SINGLE_PREFIX = "single_"  # block keys of single-stream blocks: single_0, single_1, ...
# schedule component -> attribute of the block, in the order the block runs them
DOUBLE_SUBLAYERS = {"full_attn": "attn", "full_ff": "ff", "full_ff_context": "ff_context"}
SINGLE_SUBLAYERS = {"single_proj_mlp": "proj_mlp", "single_attn": "attn", "single_proj_out": "proj_out"}
# In a single block the MLP input and the attention feed only the output projection.
CONSUMERS = {"single_attn": "single_proj_out", "single_proj_mlp": "single_proj_out"}
TEXT_LEN = 512  # T5 tokens FLUX.1 encodes prompts to (ECAD's count too)


class FluxFamily(ModelFamily):
    """FLUX.1: T5 + CLIP text, embedded guidance, double- then single-stream blocks."""

    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    transformer_class = "FluxTransformer2DModel"
    text_components = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    embedding_keys = ("prompt_embeds", "pooled_prompt_embeds")
    uses_negative_prompt = False
    reference_model = "flux-dev"
    size_multiple = 16  # VAE 8 x 2x2 latent packing
    cacheable = True
    has_single_blocks = True
    component_prefixes = ("full_", "single_")  # a schedule whose sub-layers start so is a FLUX one
    default_patch_size = 1
    default_text_len = TEXT_LEN

    # -- pipeline calls ---------------------------------------------------------------------
    def encode_prompts(self, pipe, prompts: list[str], negative_prompts: list[str], max_sequence_length: int) -> dict:
        """The T5 sequence and the pooled CLIP vector (negative prompts are not used)."""
        embeds, pooled, _text_ids = pipe.encode_prompt(
            prompts, prompt_2=None, device=pipe.text_encoder.device, max_sequence_length=max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def folder_defaults(self, pipeline_class: str, transformer_config: dict, vae_scale: int) -> dict[str, Any]:
        """FLUX.1's own sampling defaults: guidance 3.5, 512 text tokens."""
        if pipeline_class in self.pipeline_classes:
            return {"guidance_scale": 3.5, "max_sequence_length": TEXT_LEN}
        return {}

    # -- transformer shapes -----------------------------------------------------------------
    def matches_config(self, config: dict[str, Any]) -> bool:
        """FLUX transformers: single-stream layers or the class name."""
        return "num_single_layers" in config or str(config.get("_class_name", "")).startswith("Flux")

    def native_size(self, config: dict[str, Any]) -> int:
        """ECAD's FLUX setting: 256² (the config names no sample size)."""
        return 256

    def spec_fields(self, config: dict[str, Any], hidden: int) -> dict[str, Any]:
        """Single-stream block count, T5 and CLIP widths, guidance embedding."""
        return {
            "num_single_blocks": int(config.get("num_single_layers", 0)),
            "joint_attention_dim": int(config.get("joint_attention_dim", 4096)),
            "pooled_projection_dim": int(config.get("pooled_projection_dim", 768)),
            "guidance_embeds": bool(config.get("guidance_embeds", False)),
        }

    def image_tokens(self, height: int, width: int, patch_size: int, vae_scale_factor: int = 8) -> int:
        """FLUX packs 2x2 latent pixels into one token."""
        lh, lw = height // vae_scale_factor, width // vae_scale_factor
        return (lh // 2) * (lw // 2)

    # -- caching ----------------------------------------------------------------------------
    def block_names(self, num_blocks: int, num_single_blocks: int) -> tuple[str, ...]:
        """Double-stream blocks `"0"`.., then single-stream blocks `"single_0"`.."""
        singles = tuple(f"{SINGLE_PREFIX}{i}" for i in range(num_single_blocks))
        return super().block_names(num_blocks, num_single_blocks) + singles

    def components_of(self, block: str) -> tuple[str, ...]:
        """Double blocks: `full_attn`, `full_ff`, `full_ff_context`; single blocks: `single_*`."""
        return tuple(SINGLE_SUBLAYERS if block.startswith(SINGLE_PREFIX) else DOUBLE_SUBLAYERS)

    def sublayer_modules(self, transformer) -> dict[tuple[str, str], Any]:
        """The sub-layers of `transformer_blocks`, then of `single_transformer_blocks`."""
        out = {
            (str(i), comp): getattr(block, attr)
            for i, block in enumerate(transformer.transformer_blocks)
            for comp, attr in DOUBLE_SUBLAYERS.items()
        }
        out.update(
            ((f"{SINGLE_PREFIX}{i}", comp), getattr(block, attr))
            for i, block in enumerate(transformer.single_transformer_blocks)
            for comp, attr in SINGLE_SUBLAYERS.items()
        )
        return out

    def consumer_of(self, component: str) -> str | None:
        """`single_attn` and `single_proj_mlp` feed only `single_proj_out`."""
        return CONSUMERS.get(component)

    # -- costs ------------------------------------------------------------------------------
    def sublayer_macs(self, spec, attention_products: bool = False) -> dict[str, int]:
        """Joint attention over image + text tokens, the image and text MLPs, the single blocks."""
        d, n, t = spec.hidden, spec.image_tokens, spec.text_len
        f = spec.ff_mult * d
        seq = n + t
        products = 2 * seq * seq * d if attention_products else 0
        return {
            "full_attn": 4 * seq * d * d + products,  # q/k/v/out for image tokens and their text twins
            "full_ff": 2 * n * d * f,
            "full_ff_context": 2 * t * d * f,
            "single_attn": 3 * seq * d * d + products,  # q, k, v (pre-only attention: no out projection)
            "single_proj_mlp": seq * d * f,
            "single_proj_out": seq * (d + f) * d,
        }

    def always_macs(self, spec) -> int:
        """Timestep, guidance and pooled-text MLPs, context embedder, x embedder, modulations, output."""
        d, n, t = spec.hidden, spec.image_tokens, spec.text_len
        embed = 256 * d + d * d  # timestep MLP
        if spec.guidance_embeds:
            embed += 256 * d + d * d
        embed += spec.pooled_projection_dim * d + d * d  # pooled text MLP
        context = t * spec.joint_attention_dim * d
        x_in = n * spec.in_channels * d
        modulation = spec.num_blocks * 2 * d * 6 * d + spec.num_single_blocks * d * 3 * d
        norm_out = d * 2 * d
        out = n * d * spec.out_channels
        return embed + context + x_in + modulation + norm_out + out

    def output_elements(self, spec, component: str) -> int:
        """Joint outputs span image and text tokens; the single-block MLP is `ff_mult` wide."""
        d, n, t = spec.hidden, spec.image_tokens, spec.text_len
        seq = n + t
        sizes = {
            "full_attn": seq * d,  # image and text attention outputs
            "full_ff": n * d,
            "full_ff_context": t * d,
            "single_attn": seq * d,
            "single_proj_mlp": seq * spec.ff_mult * d,
            "single_proj_out": seq * d,
        }
        return sizes[component]


FLUX = FluxFamily()
