"""The two halves of text-to-image generation as plain objects: encode text, denoise images.

Ray stages (in `actors/`) and plain loops (benchmarks, tests) use the same objects, so the
Ray plan adds scheduling and nothing else.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ecad_ray.batch_invariance import pad_small_linears
from ecad_ray.config import ImageSettings
from ecad_ray.families import encode_prompts, family_of, generate_images
from ecad_ray.models.loading import load_pipeline, resolve_device, resolve_dtype
from ecad_ray.models.registry import ModelSpec


class TextEncoder:
    """A model's tokenizer + text encoder, loaded once, turning prompts into embeddings."""

    def __init__(self, spec: ModelSpec, device: str = "auto", dtype: str = "auto"):
        # the pipelines warn once per batch that long prompts were truncated to the text length,
        # which is by design (PixArt-α: 120 T5 tokens, demo: 16)
        logging.getLogger("diffusers.pipelines").setLevel(logging.ERROR)
        self.spec = spec
        self.family = family_of(spec.family)
        dev = resolve_device(device)
        self.pipe = load_pipeline(spec, dev, resolve_dtype(dtype, spec, dev), part="text")
        for name in ("text_encoder", "text_encoder_2"):  # FLUX has two
            if getattr(self.pipe, name, None) is not None:
                pad_small_linears(getattr(self.pipe, name))

    def __call__(self, prompts: list[str], negative_prompts: list[str]) -> dict[str, torch.Tensor]:
        """Embeddings for each prompt (batch dimension first), on the CPU."""
        tensors = encode_prompts(self.pipe, self.family, prompts, negative_prompts, self.spec.max_sequence_length)
        return {k: v.cpu() for k, v in tensors.items()}


class ImageGenerator:
    """A model's transformer + VAE + scheduler, loaded once, turning embeddings into images."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: ImageSettings,
        device: str = "auto",
        dtype: str = "auto",
        schedule_path: str | None = None,
    ):
        self.spec = spec
        self.settings = settings
        self.family = family_of(spec.family)
        self.device = resolve_device(device)
        self.pipe = load_pipeline(spec, self.device, resolve_dtype(dtype, spec, self.device), part="denoise")
        pad_small_linears(self.pipe.transformer)  # pixels must not depend on the batch
        self.schedule = None
        self.cache = None
        self.warmed_up = False
        if schedule_path:
            from ecad_ray.caching import load_schedule, validate_schedule

            self.schedule = load_schedule(schedule_path)
            validate_schedule(self.schedule, self.pipe.transformer, source=schedule_path)

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
