"""Ray Data stages of `generate` that hold models: encode prompts into the store, denoise images."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from actors.stage import Stage
from ecad_ray.config import ImageSettings
from ecad_ray.embeddings import EmbeddingRef, EmbeddingStore, ShardReader
from ecad_ray.engine import ImageGenerator, TextEncoder
from ecad_ray.caching.schedule import Schedule
from ecad_ray.models.registry import ModelSpec


class TextEncoderStage(Stage):
    """Fill the `shard`/`row` columns: embed each prompt not yet in the store, once."""

    name = "encode"
    consumes = {
        "prompt": "prompt text",
        "negative_prompt": "negative prompt text ('' for none)",
        "prompt_id": "stable id of the prompt",
        "partition": "store sub-folder (COCO megabatch, MJHQ category) or ''",
        "shard": "embeddings shard of the prompt, '' when not yet embedded",
        "row": "row of the prompt inside its shard (-1 when not yet embedded)",
    }
    produces = {"shard": "embeddings shard (relative to the store)", "row": "row inside the shard"}

    def __init__(self, model_spec: ModelSpec, store_root: str, device: str = "auto", dtype: str = "auto", threads: int = 1):
        torch.set_num_threads(threads)
        self.model_spec = model_spec
        self.encoder = TextEncoder(self.model_spec, device, dtype)
        self.store = EmbeddingStore(store_root)
        self.known: dict[tuple[str, str], tuple[str, int]] = {}

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        shards = [str(s) for s in batch["shard"]]
        rows = [int(r) for r in batch["row"]]
        todo: dict[tuple[str, str, str], list[int]] = {}
        for i in range(n):
            key = (str(batch["prompt"][i]), str(batch["negative_prompt"][i]))
            if shards[i]:
                continue
            if key in self.known:
                shards[i], rows[i] = self.known[key]
            else:
                todo.setdefault((*key, str(batch["partition"][i])), []).append(i)
        by_partition: dict[str, list[tuple[str, str, list[int]]]] = {}
        for (prompt, neg, part), idx in todo.items():
            by_partition.setdefault(part, []).append((prompt, neg, idx))
        for part, items in by_partition.items():
            tensors = self.encoder([p for p, _, _ in items], [n_ for _, n_, _ in items])
            shard = self.store.write_shard(
                tensors,
                prompt_ids=[str(batch["prompt_id"][idx[0]]) for _, _, idx in items],
                prompts=[p for p, _, _ in items],
                negative_prompts=[n_ for _, n_, _ in items],
                model=self.model_spec.name,
                family=self.model_spec.family,
                partition=part,
            )
            for row, (prompt, neg, idx) in enumerate(items):
                self.known[(prompt, neg)] = (shard, row)
                for i in idx:
                    shards[i], rows[i] = shard, row
        batch["shard"] = np.array(shards, dtype=object)
        batch["row"] = np.array(rows, dtype=np.int64)
        return batch


CACHE_COLUMNS = {
    "cache_computed": "sub-layer calls the cache let run, this row's share of its batch (int; sums are exact)",
    "cache_reused": "sub-layer calls served from the cache, this row's share of its batch (int; sums are exact)",
    "cache_peak_bytes": "most bytes this worker's cache held so far (int; 0 uncached)",
}


class GeneratorStage(Stage):
    """Denoise one image per row from its stored embeddings and seed (the GPU-resident model)."""

    name = "generate"
    consumes = {
        "shard": "embeddings shard (relative to the store)",
        "row": "row inside the shard",
        "seed": "the image's seed: its starting noise depends on it alone",
    }
    produces = {"image": "uint8 array (H, W, 3)", "seconds_per_image": "generation seconds per image", **CACHE_COLUMNS}

    def __init__(
        self,
        model_spec: ModelSpec,
        settings: dict,
        store_root: str,
        device: str = "auto",
        dtype: str = "auto",
        schedule: Schedule | None = None,
        schedule_source: str = "",
        threads: int = 1,
    ):
        """`schedule`: the run's caching schedule as the driver parsed it (None: uncached)."""
        torch.set_num_threads(threads)
        self.generator = ImageGenerator(model_spec, ImageSettings(**settings), device, dtype, schedule, schedule_source)
        self.reader = ShardReader(store_root)
        self.batches_done = 0

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        if self.batches_done == 1:
            _stream_test_gate()
        self.batches_done += 1
        refs = [EmbeddingRef(str(s), int(r)) for s, r in zip(batch["shard"], batch["row"])]
        embeddings = self.reader.gather(refs)
        seeds = [int(s) for s in batch["seed"]]
        self.generator.warm_up(embeddings, seeds)  # untimed, first batch only (the cache goes on here)
        before = self._cache_counts()
        start = time.perf_counter()
        images = self.generator(embeddings, seeds)
        batch["image"] = images
        batch["seconds_per_image"] = np.full(n, (time.perf_counter() - start) / n)
        after = self._cache_counts()
        batch["cache_computed"] = _spread(after[0] - before[0], n)
        batch["cache_reused"] = _spread(after[1] - before[1], n)
        batch["cache_peak_bytes"] = np.full(n, after[2], dtype=np.int64)
        return batch

    def _cache_counts(self) -> tuple[int, int, int]:
        """(computed, reused, peak bytes) of this worker's cache so far; zeros when uncached."""
        cache = self.generator.cache
        if cache is None:
            return 0, 0, 0
        return cache.stats.computed, cache.stats.reused, cache.stats.peak_bytes


def _spread(total: int, n: int) -> np.ndarray:
    """`total` split over `n` rows as integers that sum to it (a batch's count, per row)."""
    out = np.full(n, total // n, dtype=np.int64)
    out[: total % n] += 1
    return out


STREAM_TEST_GATE_ENV = "ECAD_RAY_TEST_STREAM_GATE"


def _stream_test_gate(timeout: float = 60.0) -> None:
    """Test-only: hold the second batch until the driver says it holds the first.

    Unset (always, outside the streaming test) this returns at once. Set to a folder, the
    actor waits for `driver-has-batch-1` there, which the test's progress callback writes on
    the first batch it receives; if it never comes (the driver only gets batch 1 once batch 2
    exists, i.e. the plan buffers) the actor writes `gate-timed-out` and carries on, so a
    buffering plan fails the test instead of hanging it. A deterministic check, not a timing race.
    """
    folder = os.environ.get(STREAM_TEST_GATE_ENV)
    if not folder:
        return
    deadline = time.monotonic() + timeout
    while not (Path(folder) / "driver-has-batch-1").exists():
        if time.monotonic() > deadline:
            (Path(folder) / "gate-timed-out").touch()
            return
        time.sleep(0.05)


class EncodeThenGenerateStage(Stage):
    """Both model stages in one actor process, for runs with a single generation worker.

    With one worker a separate encoder actor buys no parallelism worth having (encoding a
    batch takes milliseconds to a few hundred, generating it seconds) but costs a second
    process that imports torch/diffusers/transformers again (about 5 s of CPU) and, on a GPU,
    a second CUDA context. Several workers keep the shared encoder actor instead, so the text
    encoder is loaded once rather than once per worker.
    """

    consumes = TextEncoderStage.consumes
    produces = {**TextEncoderStage.produces, **GeneratorStage.produces}

    def __init__(self, encoder: dict, generator: dict):
        self.encode = TextEncoderStage(**encoder)
        self.generate = GeneratorStage(**generator)

    def __call__(self, batch: dict) -> dict:
        return self.generate(self.encode(batch))
