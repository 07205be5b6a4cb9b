"""`ModelFamily`: the questions ecad-ray asks about a model family, with the answers every
diffusers text-to-image pipeline shares.

A family subclass (`pixart.py`, `flux.py`) overrides what differs: how prompts become
embeddings, how the pipeline is called, where the cacheable sub-layers sit, what a transformer
of that family costs. The rest of ecad-ray asks these objects and never compares family names.

Methods that take `spec` read a transformer's shapes from an `ecad_ray.caching.spec.TransformerSpec`
(attributes only: this package imports nothing of caching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ModelFamily:
    """One family of models; class attributes are its facts, methods its rules."""

    name: str = ""  # the family's name in `ModelSpec.family`, schedules and tables
    pipeline_classes: tuple[str, ...] = ()  # diffusers pipeline classes that belong to it
    transformer_class: str | None = None  # diffusers class of its transformer (built from a shipped config)
    text_components: tuple[str, ...] = ("text_encoder", "tokenizer")  # pipeline parts only the text half loads
    embedding_keys: tuple[str, ...] = ()  # tensors stored per prompt; () = no embeddings pipeline
    uses_negative_prompt: bool = False  # classifier-free guidance: negative-prompt embeddings, a [uncond, cond] batch
    reference_model: str | None = None  # registry model a schedule of this family is costed on by default
    size_multiple: int = 8  # pixels height and width must be a multiple of (VAE factor x patch)

    # -- caching: names a schedule uses ---------------------------------------------------
    cacheable: bool = False  # has an ECAD caching schedule format (sub-layers below)
    has_single_blocks: bool = False  # schedules carry `num_single_blocks` (FLUX single-stream blocks)
    self_attention: str | None = None  # sub-layer roles TGATE needs (PixArt only)
    cross_attention: str | None = None
    feed_forward: str | None = None

    @property
    def supports_tgate(self) -> bool:
        """TGATE caches cross-attention; only a family that has one can run it."""
        return self.cross_attention is not None

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    # -- pipeline calls ---------------------------------------------------------------------
    def prompt_kwargs(self, max_sequence_length: int | None) -> dict[str, Any]:
        """Text settings of a call with prompts, as ECAD runs the model (its text length)."""
        return {"max_sequence_length": max_sequence_length}

    def exact_size_kwargs(self) -> dict[str, Any]:
        """Arguments that make the pipeline draw exactly the height and width it is given."""
        return {}

    def no_prompt_kwargs(self) -> dict[str, Any]:
        """Arguments that tell the pipeline its text comes as precomputed embeddings."""
        return {"prompt": None}

    def call_kwargs(
        self,
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        output_type: str = "np",
        prompt: str | list[str] | None = None,
        max_sequence_length: int | None = None,
        embeddings: dict | None = None,
    ) -> dict[str, Any]:
        """Arguments of one pipeline call as ecad-ray runs this family (add `generator`).

        Exactly `height` x `width`; text from `prompt` (encoded to `max_sequence_length`
        tokens) or, when `embeddings` are given, from those tensors (`embedding_keys`).
        """
        kwargs = dict(
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            output_type=output_type,
            **self.exact_size_kwargs(),
        )
        if embeddings is None:
            kwargs.update(prompt=prompt, **self.prompt_kwargs(max_sequence_length))
        else:
            kwargs.update(self.no_prompt_kwargs(), **embeddings)
        return kwargs

    def encode_prompts(self, pipe, prompts: list[str], negative_prompts: list[str], max_sequence_length: int) -> dict:
        """The family's embedding tensors (`embedding_keys`, batch first) for a batch of prompts."""
        raise NotImplementedError(f"model family {self.name} has no embeddings pipeline")

    def folder_defaults(self, pipeline_class: str, transformer_config: dict, vae_scale: int) -> dict[str, Any]:
        """`ModelSpec` defaults a local pipeline folder's configs give (none unless overridden)."""
        return {}

    # -- transformer shapes -----------------------------------------------------------------
    default_patch_size: int = 2  # patch size when a transformer config names none
    default_text_len: int = 0  # text tokens a loaded transformer is run with when none is given
    ecad_text_len: int | None = None  # text tokens ECAD's published MACs count; None = the model's own

    def matches_config(self, config: dict[str, Any]) -> bool:
        """True when `config` (a diffusers transformer config) is a transformer of this family."""
        return False

    def native_size(self, config: dict[str, Any]) -> int:
        """Image side (pixels) a transformer of this config is sampled at by default."""
        raise NotImplementedError

    def folder_text_len(self, folder: Path) -> int:
        """Text tokens a pipeline folder of this family encodes prompts to."""
        return self.default_text_len

    def spec_fields(self, config: dict[str, Any], hidden: int) -> dict[str, Any]:
        """Family-specific `TransformerSpec` fields read from a transformer config."""
        return {}

    def image_tokens(self, height: int, width: int, patch_size: int, vae_scale_factor: int = 8) -> int:
        """Transformer tokens of one image: the latent cut into `patch_size` patches."""
        lh, lw = height // vae_scale_factor, width // vae_scale_factor
        return (lh // patch_size) * (lw // patch_size)

    # -- caching: where the sub-layers are --------------------------------------------------
    def block_names(self, num_blocks: int, num_single_blocks: int) -> tuple[str, ...]:
        """Every block key a schedule holds, in run order."""
        return tuple(str(i) for i in range(num_blocks))

    def components_of(self, block: str) -> tuple[str, ...]:
        """The cacheable sub-layers of block `block` (a schedule key), in the order it runs them."""
        raise NotImplementedError(f"model family {self.name} has no caching schedules")

    def sublayer_modules(self, transformer) -> dict[tuple[str, str], Any]:
        """(block key, component) -> the sub-layer module whose output a schedule caches."""
        raise NotImplementedError(f"model family {self.name} has no caching schedules")

    def consumer_of(self, component: str) -> str | None:
        """The one sub-layer of the same block that consumes `component`'s output, if only one does
        (None: the block's residual stream consumes it every step)."""
        return None

    # -- costs (ECAD's counting: linears only, per sample) ------------------------------------
    def sublayer_macs(self, spec, attention_products: bool = False) -> dict[str, int]:
        """MACs of one sample through each cacheable sub-layer of one block."""
        raise NotImplementedError(f"model family {self.name} has no cost model")

    def always_macs(self, spec) -> int:
        """MACs of one sample per step outside the cacheable sub-layers."""
        raise NotImplementedError(f"model family {self.name} has no cost model")

    def output_elements(self, spec, component: str) -> int:
        """Elements of one sample's output of `component` (what a cache entry holds per sample)."""
        raise NotImplementedError(f"model family {self.name} has no cost model")
