"""Score caching schedules on one loaded model: the work of one search worker.

The model loads once (`ImageGenerator`, uncached); each candidate's schedule is applied with
`apply_schedule` (a peer, `ecad_ray.peers.PeerMethod`, with `apply_method`: the comparison
table scores both the same way), the search's images are generated, the hooks come off again,
and the images are scored (`QualityScorer`). The prompts are embedded once, here, or read from an embeddings
store. Image i of prompt p always has seed `start_seed + i * seed_step` (each image its own
generator), so every candidate and the uncached reference draw the same noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ecad_ray.config import ImageSettings
from ecad_ray.models.registry import ModelSpec


@dataclass(frozen=True)
class EvalJob:
    """What every candidate is scored on: prompts × images per prompt at fixed seeds."""

    prompts: tuple[str, ...]
    images_per_prompt: int = 1
    start_seed: int = 0
    seed_step: int = 1
    negative_prompt: str = ""
    input_embeddings: str = ""  # an embeddings store holding the prompts ('' = embed them here)
    batch_size: int = 8

    def rows(self) -> list[tuple[int, int]]:
        """(prompt index, seed) of every image, prompt by prompt."""
        return [(p, self.start_seed + i * self.seed_step)
                for p in range(len(self.prompts)) for i in range(self.images_per_prompt)]

    def captions(self) -> list[str]:
        return [self.prompts[p] for p, _ in self.rows()]


class CandidateEvaluator:
    """One model on one device, scoring schedules one after another."""

    def __init__(self, model_spec: ModelSpec, settings: ImageSettings, job: EvalJob, objective: str,
                 reference: np.ndarray | None = None, device: str = "auto", dtype: str = "auto",
                 lpips_random_backbone: bool = False, with_lpips: bool = False):
        from ecad_ray.engine import ImageGenerator
        from ecad_ray.search.objectives import QualityScorer

        self.job = job
        self.reference = reference
        self.generator = ImageGenerator(model_spec, settings, device, dtype)
        self.embeddings = _embeddings(model_spec, job, device, dtype)
        self.scorer = QualityScorer(objective, str(self.generator.device), lpips_random_backbone, with_lpips)

    def images(self, setting=None) -> tuple[np.ndarray, float]:
        """Every image of the job under `setting` (a Schedule, a PeerMethod, None: uncached) and
        seconds per image (attaching the hooks, and a peer's calibration, not counted)."""
        from ecad_ray.caching.macs import LinearMacCounter

        rows = self.job.rows()
        remove = self._attach(setting)
        start = time.perf_counter()
        try:
            with LinearMacCounter(self.generator.pipe.transformer) as counter:
                images = self._generate(rows)
        finally:
            remove()
        self.counted_macs = counter.macs / len(rows)  # per image: what `evaluate` reports
        return images, (time.perf_counter() - start) / len(rows)

    def _generate(self, rows: list[tuple[int, int]]) -> np.ndarray:
        import torch

        parts = []
        for at in range(0, len(rows), self.job.batch_size):
            chunk = rows[at:at + self.job.batch_size]
            index = torch.tensor([p for p, _ in chunk])
            embeddings = {k: v[index] for k, v in self.embeddings.items()}
            parts.append(self.generator(embeddings, [s for _, s in chunk]))
        return np.concatenate(parts)

    def _attach(self, setting):
        """Put `setting`'s hooks on the pipeline; returns what takes them off."""
        from ecad_ray.caching.schedule import Schedule
        from ecad_ray.peers import PeerMethod, apply_method

        if isinstance(setting, Schedule):
            from ecad_ray.caching import apply_schedule

            return apply_schedule(self.generator.pipe, setting).remove
        if isinstance(setting, PeerMethod):  # MagCache calibrates on the job's first batch, uncached
            first = self.job.rows()[:self.job.batch_size]
            return apply_method(self.generator.pipe, setting, self.generator.settings.steps,
                                calibrate=lambda: self._generate(first))
        return lambda: None

    def evaluate(self, setting) -> dict[str, float]:
        """The candidate's scores (`quality`, `loss`, fidelity) and its `seconds_per_image`."""
        images, seconds = self.images(setting)
        scores = self.scorer(images, self.job.captions(), self.reference)
        scores["seconds_per_image"] = seconds
        scores["counted_macs"] = self.counted_macs
        return scores


def _embeddings(model_spec: ModelSpec, job: EvalJob, device: str, dtype: str) -> dict:
    """Each prompt's embeddings (one row per prompt), from the store or freshly encoded."""
    if job.input_embeddings:
        from ecad_ray.embeddings import EmbeddingStore, ShardReader
        from ecad_ray.errors import UserError

        refs = EmbeddingStore(job.input_embeddings).lookup(model_spec.name, job.negative_prompt)
        missing = [p for p in job.prompts if p not in refs]
        if missing:
            raise UserError(f"--input-embeddings {job.input_embeddings}: no {model_spec.name} embeddings "
                            f"for prompt {missing[0]!r}")
        return ShardReader(job.input_embeddings).gather([refs[p] for p in job.prompts])
    from ecad_ray.engine import TextEncoder

    encoder = TextEncoder(model_spec, device, dtype)
    return encoder(list(job.prompts), [job.negative_prompt] * len(job.prompts))


def job_prompts(model: str, prompt_file: str | None, input_embeddings: str | None,
                negative_prompt: str = "") -> tuple[str, ...]:
    """The search's prompts: a prompt file's, else every prompt an embeddings store holds for `model`."""
    from ecad_ray.errors import UserError

    if prompt_file:
        from ecad_ray.prompts import read_prompt_file

        return tuple(p.text for p in read_prompt_file(prompt_file))
    if input_embeddings:
        from ecad_ray.embeddings import EmbeddingStore

        refs = EmbeddingStore(input_embeddings).lookup(model, negative_prompt)
        if not refs:
            raise UserError(f"--input-embeddings {input_embeddings}: holds no {model} embeddings")
        return tuple(refs)
    raise UserError("search: give --prompt-file or --input-embeddings")
