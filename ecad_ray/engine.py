"""The two halves of text-to-image generation as plain objects: encode text, denoise images.

Ray stages (in `actors/`) and plain loops (benchmarks, tests) use the same objects, so the
Ray plan adds scheduling and nothing else. What differs between PixArt and FLUX (embedding
keys, pipeline arguments) is the model family's (`ecad_ray.models.families`). Each image gets
its own `torch.Generator`, so its starting noise depends on its seed alone, never on its
position in a batch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from ecad_ray.batch_invariance import pad_small_linears
from ecad_ray.config import ImageSettings
from ecad_ray.models.families import ModelFamily, generation_family
from ecad_ray.models.loading import load_pipeline, resolve_device, resolve_dtype
from ecad_ray.models.registry import ModelSpec

if TYPE_CHECKING:
    from ecad_ray.caching.schedule import Schedule


class TextEncoder:
    """A model's tokenizer + text encoder, loaded once, turning prompts into embeddings."""

    def __init__(self, model_spec: ModelSpec, device: str = "auto", dtype: str = "auto"):
        # the pipelines warn once per batch that long prompts were truncated to the text length,
        # which is by design (PixArt-α: 120 T5 tokens, demo: 16)
        logging.getLogger("diffusers.pipelines").setLevel(logging.ERROR)
        self.model_spec = model_spec
        self.family = generation_family(model_spec.family)
        dev = resolve_device(device)
        self.pipe = load_pipeline(model_spec, dev, resolve_dtype(dtype, model_spec, dev), part="text")
        for name in ("text_encoder", "text_encoder_2"):  # FLUX has two
            if getattr(self.pipe, name, None) is not None:
                pad_small_linears(getattr(self.pipe, name))

    def __call__(self, prompts: list[str], negative_prompts: list[str]) -> dict[str, torch.Tensor]:
        """Embeddings for each prompt (batch dimension first), on the CPU."""
        with torch.no_grad():
            tensors = self.family.encode_prompts(self.pipe, prompts, negative_prompts, self.model_spec.max_sequence_length)
        return {k: v.cpu() for k, v in tensors.items()}


class ImageGenerator:
    """A model's transformer + VAE + scheduler, loaded once, turning embeddings into images."""

    def __init__(
        self,
        model_spec: ModelSpec,
        settings: ImageSettings,
        device: str = "auto",
        dtype: str = "auto",
        schedule: Schedule | None = None,
        schedule_source: str = "",
    ):
        """`schedule`: the run's caching schedule, parsed once by the driver (None: uncached);
        `schedule_source` names it (its file) in a validation error."""
        self.model_spec = model_spec
        self.settings = settings
        self.family = generation_family(model_spec.family)
        self.device = resolve_device(device)
        self.pipe = load_pipeline(model_spec, self.device, resolve_dtype(dtype, model_spec, self.device), part="denoise")
        pad_small_linears(self.pipe.transformer)  # pixels must not depend on the batch
        self.schedule = schedule
        self.cache = None
        self.warmed_up = False
        if schedule is not None:
            from ecad_ray.caching import validate_schedule

            # the driver checked it against the model's known config; this checks the loaded
            # transformer (the only check for a hub model without a shipped config)
            validate_schedule(schedule, self.pipe.transformer, source=schedule_source or f"schedule {schedule.name}")

    def __call__(self, embeddings: dict[str, torch.Tensor], seeds: list[int]) -> np.ndarray:
        """uint8 images (N, H, W, 3), one per seed, for the N rows of `embeddings`."""
        self.warm_up(embeddings, seeds)
        return self._generate(embeddings, seeds, self.settings.steps)

    def warm_up(self, embeddings: dict[str, torch.Tensor], seeds: list[int]) -> None:
        """Once: on a GPU, a 2-step pass at the real shapes (CUDA context, cuBLAS/cuDNN kernel
        choice, allocator), so timed calls measure steady-state generation; then the cache
        hooks go on. Not 1 step: PixArt's pipeline treats a single step as a distilled (DMD)
        sampler and fails with DPM-Solver.

        On a CPU the pass is skipped: a first 20-step batch took no longer than the ones after
        it (16.5 s vs 17.6 and 19.0 s, batch 8 at 64 px), while the pass itself added a tenth
        of a batch (0.6-2.6 s) to the time before a run's first image.
        """
        if self.warmed_up:
            return
        if self.device.type != "cpu":
            self._generate(embeddings, seeds, 2)
        if self.schedule is not None:
            from ecad_ray.caching import apply_schedule

            self.cache = apply_schedule(self.pipe, self.schedule)
        self.warmed_up = True

    def _generate(self, embeddings: dict[str, torch.Tensor], seeds: list[int], steps: int) -> np.ndarray:
        s = self.settings
        return generate_images(
            self.pipe,
            self.family,
            embeddings,
            seeds,
            height=s.height,
            width=s.width,
            steps=steps,
            guidance_scale=s.guidance_scale,
        )


@torch.no_grad()
def generate_images(
    pipe,
    family: ModelFamily,
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
    uses_cfg = family.uses_negative_prompt and guidance_scale > 1.0
    if len(seeds) == 1 and not uses_cfg:
        pair = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in embeddings.items()}
        return generate_images(
            pipe, family, pair, seeds * 2, height=height, width=width, steps=steps, guidance_scale=guidance_scale
        )[:1]
    pipe.vae.enable_slicing()
    device = pipe._execution_device
    dtype = pipe.transformer.dtype
    kwargs = family.call_kwargs(
        steps=steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        embeddings={k: _to(v, device, dtype) for k, v in embeddings.items()},
    )
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    out = pipe(**kwargs, generator=generators)
    return (np.clip(out.images, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _to(tensor: torch.Tensor, device, dtype) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)
