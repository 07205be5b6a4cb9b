"""The PNG writer of `generate`: it runs in the driver, on the batches the Ray Data plan streams back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actors.stage import Stage
from ecad_ray.records import image_name, write_png


class ImageWriter(Stage):
    """Write each image as a PNG (atomically, with its result row inside) and drop the pixels.

    It runs in the driver rather than as a Ray Data stage, for two reasons:
    - on a cluster the images land on the machine that ran `ecad-ray generate` (an actor
      could be placed on any node, leaving PNGs on a disk the user never sees);
    - one process fewer to start: on a 2-core laptop a writer actor's start-up (Ray worker,
      Ray Data import) delayed the first image by 1-2 s, while writing a batch of PNGs takes
      milliseconds and overlaps generation (Ray Data executes in its own thread).
    """

    name = "write"
    consumes = {
        "image": "uint8 array (H, W, 3)",
        "prompt_index": "position of the prompt in the run",
        "prompt_id": "stable id of the prompt",
        "seed": "the image's seed",
    }
    produces = {"image_path": "PNG path relative to the run folder"}

    def __init__(self, output_dir: str, settings: dict):
        self.output_dir = Path(output_dir)
        self.settings = settings
        self.records: list[dict] = []  # the result row of every image written, in order

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        images_dir = self.output_dir / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            name = image_name(int(batch["prompt_index"][i]), str(batch["prompt_id"][i]), int(batch["seed"][i]))
            record = result_record(batch, i, self.settings, f"images/{name}")
            write_png(np.asarray(batch["image"][i]), images_dir / name, record)
            self.records.append(record)
            paths.append(record["image_path"])
        out = {k: v for k, v in batch.items() if k != "image"}
        out["image_path"] = np.array(paths, dtype=object)
        return out


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
        "seconds_per_image": float(batch["seconds_per_image"][i]),
    }
