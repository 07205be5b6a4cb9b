"""`ecad-ray search` on Ray: a pool of workers, each holding the model, scoring candidates.

    reference:  StagePool([ReferenceStage], 1 actor)  -> the uncached images, once per search
    candidates: StagePool([CandidateStage], --num-workers actors), up for the whole search:
                one batch = one candidate (its schedule as ECAD JSON) -> its scores

The pool is an `actors.pipeline.StagePool` built from a `StageSpec`, so resources, restarts
and failures (`StageError` naming the stage and the candidate) are those of every other plan.
The search loop itself (`ecad_ray.search.run`) only sees the `Evaluator` interface.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from actors.pipeline import StagePool, StageSpec
from actors.plan import ray_session, reported_failures
from actors.stage import Stage
from ecad_ray.caching.schedule import Schedule, schedule_from_json
from ecad_ray.search.run import Progress, SearchConfig, run_search, worker_args


class _Worker(Stage):
    def __init__(self, args: dict, reference: np.ndarray | None = None, threads: int = 1):
        import torch

        from ecad_ray.search.evaluator import CandidateEvaluator

        torch.set_num_threads(threads)
        self.evaluator = CandidateEvaluator(**args, reference=reference)


class ReferenceStage(_Worker):
    """The search's images with no schedule: what fidelity is measured against."""

    name = "search reference"
    consumes = {"candidate": "'reference'"}
    produces = {"images": "uint8 (1, N, H, W, 3): every image of the search job, uncached"}

    def __call__(self, batch: dict) -> dict:
        self.check(batch)
        batch["images"] = self.evaluator.images(None)[0][None]
        return batch


class CandidateStage(_Worker):
    """One candidate per row: apply its schedule, generate the job's images, score them."""

    name = "search evaluate"
    consumes = {"candidate": "genome key of the candidate", "item_name": "its file name (for errors)",
                "schedule": "ECAD schedule JSON text"}
    produces = {"scores": "JSON text: quality, loss, psnr, ssim, seconds_per_image, ..."}

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        scores = []
        for i in range(n):
            schedule = schedule_from_json(json.loads(str(batch["schedule"][i])), source=str(batch["item_name"][i]))
            scores.append(json.dumps(self.evaluator.evaluate(schedule)))
        batch["scores"] = np.array(scores, dtype=object)
        return batch


class RayEvaluator:
    """The `Evaluator` of a search on Ray (see the module docstring)."""

    def __init__(self, config: SearchConfig, gpu: bool):
        self.config = config
        self.args = worker_args(config)
        self.resources = dict(num_cpus=0 if gpu else config.threads_per_worker, num_gpus=1 if gpu else 0)
        if gpu and self.args["device"] == "auto":
            self.args["device"] = "cuda"
        self.pool: StagePool | None = None

    def reference(self) -> np.ndarray:
        kwargs = dict(args=self.args, threads=self.config.threads_per_worker)
        pool = StagePool(StageSpec(ReferenceStage, kwargs, **self.resources, pool=(1, 1)))
        try:
            (batch,) = pool.map([{"candidate": np.array(["reference"], dtype=object)}])
        finally:
            pool.close()
        return batch["images"][0]

    def open(self, reference: np.ndarray) -> None:
        n = self.config.num_workers
        kwargs = dict(args=self.args, reference=reference, threads=self.config.threads_per_worker)
        self.pool = StagePool(StageSpec(CandidateStage, kwargs, **self.resources, pool=(n, n)))

    def evaluate(self, items: list[tuple[str, Schedule]]) -> Iterator[tuple[str, dict]]:
        batches = [{"candidate": np.array([key], dtype=object), "item_name": np.array([s.name], dtype=object),
                    "schedule": np.array([json.dumps(s.to_json())], dtype=object)} for key, s in items]
        for batch in self.pool.map(batches):
            yield str(batch["candidate"][0]), json.loads(str(batch["scores"][0]))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def search_on_ray(config: SearchConfig, progress=None) -> list[dict]:
    """Run `ecad-ray search`: a local Ray on loopback (or `--address`), the pool, the loop."""
    import ray

    cpus = config.num_workers * config.threads_per_worker + 1
    with reported_failures(config.output_dir), ray_session(config.address, cpus):
        gpu = ray.cluster_resources().get("GPU", 0) > 0 and config.device != "cpu"
        return run_search(config, RayEvaluator(config, gpu), progress)
