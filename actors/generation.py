"""Ray Data stages of `generate`: encode prompts into the store, denoise images, write PNGs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from actors.stage import Stage
from ecad_ray.config import ImageSettings
from ecad_ray.embeddings import EmbeddingRef, EmbeddingStore, ShardReader
from ecad_ray.engine import ImageGenerator, TextEncoder
from ecad_ray.models.registry import resolve_model
from ecad_ray.records import image_name, write_png


class TextEncoderStage(Stage):
    """Fill the `shard`/`row` columns: embed each prompt not yet in the store, once."""

    consumes = {
        "prompt": "prompt text",
        "negative_prompt": "negative prompt text ('' for none)",
        "prompt_id": "stable id of the prompt",
        "partition": "store sub-folder (COCO megabatch, MJHQ category) or ''",
        "shard": "embeddings shard of the prompt, '' when not yet embedded",
        "row": "row of the prompt inside its shard (-1 when not yet embedded)",
    }
    produces = {"shard": "embeddings shard (relative to the store)", "row": "row inside the shard"}

    def __init__(self, model: str, store_root: str, device: str = "auto", dtype: str = "auto", threads: int = 1):
        torch.set_num_threads(threads)
        self.spec = resolve_model(model)
        self.encoder = TextEncoder(self.spec, device, dtype)
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
                model=self.spec.name,
                family=self.spec.family,
                partition=part,
            )
            for row, (prompt, neg, idx) in enumerate(items):
                self.known[(prompt, neg)] = (shard, row)
                for i in idx:
                    shards[i], rows[i] = shard, row
        batch["shard"] = np.array(shards, dtype=object)
        batch["row"] = np.array(rows, dtype=np.int64)
        return batch


class GeneratorStage(Stage):
    """Denoise one image per row from its stored embeddings and seed (the GPU-resident model)."""

    consumes = {
        "shard": "embeddings shard (relative to the store)",
        "row": "row inside the shard",
        "seed": "the image's seed: its starting noise depends on it alone",
    }
    produces = {"image": "uint8 array (H, W, 3)", "seconds": "generation seconds per image"}

    def __init__(
        self,
        model: str,
        settings: dict,
        store_root: str,
        device: str = "auto",
        dtype: str = "auto",
        schedule_path: str | None = None,
        threads: int = 1,
    ):
        torch.set_num_threads(threads)
        spec = resolve_model(model)
        self.generator = ImageGenerator(spec, ImageSettings(**settings), device, dtype, schedule_path)
        self.reader = ShardReader(store_root)

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        refs = [EmbeddingRef(str(s), int(r)) for s, r in zip(batch["shard"], batch["row"])]
        embeddings = self.reader.gather(refs)
        seeds = [int(s) for s in batch["seed"]]
        self.generator.warm_up(embeddings, seeds)  # untimed, first batch only
        start = time.perf_counter()
        images = self.generator(embeddings, seeds)
        batch["image"] = images
        batch["seconds"] = np.full(n, (time.perf_counter() - start) / n)
        return batch


class ImageWriterStage(Stage):
    """Write each image as a PNG (atomically, with its result row inside) and drop the pixels.

    Stateless, so Ray runs it as tasks on pooled workers (no actor start-up per run).
    """

    consumes = {
        "image": "uint8 array (H, W, 3)",
        "prompt_index": "position of the prompt in the run",
        "prompt_id": "stable id of the prompt",
        "seed": "the image's seed",
    }
    produces = {"image_path": "PNG path relative to the run folder"}

    def __call__(self, batch: dict, output_dir: str, settings: dict) -> dict:
        n = self.check(batch)
        images_dir = Path(output_dir) / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            name = image_name(int(batch["prompt_index"][i]), str(batch["prompt_id"][i]), int(batch["seed"][i]))
            record = result_record(batch, i, settings, f"images/{name}")
            write_png(np.asarray(batch["image"][i]), images_dir / name, record)
            paths.append(record["image_path"])
        out = {k: v for k, v in batch.items() if k != "image"}
        out["image_path"] = np.array(paths, dtype=object)
        return out


def write_images(batch: dict, output_dir: str, settings: dict) -> dict:
    """Task-form of `ImageWriterStage` for `map_batches`."""
    return ImageWriterStage()(batch, output_dir, settings)


def result_record(batch: dict, i: int, settings: dict, image_path: str) -> dict:
    """One results-table row for row `i` of a batch."""
    return {
        "prompt_index": int(batch["prompt_index"][i]),
        "prompt_id": str(batch["prompt_id"][i]),
        "prompt": str(batch["prompt"][i]),
        "negative_prompt": str(batch["negative_prompt"][i]),
        "partition": str(batch["partition"][i]),
        "seed": int(batch["seed"][i]),
        "model": settings["model"],
        "schedule": settings["schedule"],
        "height": settings["height"],
        "width": settings["width"],
        "steps": settings["steps"],
        "guidance_scale": float(settings["guidance_scale"]),
        "image_path": image_path,
        "seconds": float(batch["seconds"][i]),
    }
