"""`ecad-ray search` on Ray: a pool of workers, each holding the model, scoring candidates.

    reference:  StagePool([ReferenceStage], 1 actor)  -> the uncached images, once per search
    candidates: StagePool([CandidateStage], --num-workers actors), up for the whole search:
                one batch = one candidate (its schedule as ECAD JSON) -> its scores
    comparison: the same pool scores the uncached model, schedules and peers (`--method` specs)
                side by side (`compare_on_ray`, `ecad_ray.search.compare`)

The pool is an `actors.pipeline.StagePool` built from a `StageSpec`, so resources, restarts
and failures (`StageError` naming the stage and the candidate) are those of every other plan.
The search loop itself (`ecad_ray.search.run`) only sees the `Evaluator` interface.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from actors.pipeline import StagePool, StageSpec
from actors.plan import ray_session, reported_failures
from actors.stage import Stage
from ecad_ray.caching.schedule import Schedule, load_schedule, schedule_from_json
from ecad_ray.peers import PeerMethod, parse_method
from ecad_ray.search.run import SearchConfig, run_search, worker_args


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
    consumes = {"candidate": "genome key of the candidate (a comparison: the method's name)",
                "item_name": "its file name (for errors)",
                "schedule": "ECAD schedule JSON text ('' for a peer or uncached)",
                "method": "a peer's --method spec ('' for a schedule or uncached)"}
    produces = {"scores": "JSON text: quality, loss, psnr, ssim, seconds_per_image, ..."}

    def __call__(self, batch: dict) -> dict:
        n = self.check(batch)
        scores = []
        for i in range(n):
            text, spec = str(batch["schedule"][i]), str(batch["method"][i])
            if spec:
                setting = parse_method(spec)
            elif text:
                setting = schedule_from_json(json.loads(text), source=str(batch["item_name"][i]))
            else:
                setting = None
            scores.append(json.dumps(self.evaluator.evaluate(setting)))
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

    def evaluate(self, items: list[tuple[str, Schedule | PeerMethod | None]]) -> Iterator[tuple[str, dict]]:
        batches = [_batch(key, s) for key, s in items]
        for batch in self.pool.map(batches):
            yield str(batch["candidate"][0]), json.loads(str(batch["scores"][0]))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _batch(key: str, setting: Schedule | PeerMethod | None) -> dict:
    """One candidate row: a schedule travels as ECAD JSON, a peer as its spec text."""
    schedule = json.dumps(setting.to_json()) if isinstance(setting, Schedule) else ""
    method = setting.text if isinstance(setting, PeerMethod) else ""
    name = setting.name if isinstance(setting, Schedule) else key
    return {name_: np.array([v], dtype=object) for name_, v in
            (("candidate", key), ("item_name", name), ("schedule", schedule), ("method", method))}


def search_on_ray(config: SearchConfig, progress=None, methods: list[str] = ()) -> list[dict]:
    """Run `ecad-ray search`: a local Ray on loopback (or `--address`), the pool, the loop.

    With `methods` (`--method` specs), the final front is then scored beside them on the search's
    own prompts and seeds: `<output-dir>/methods.parquet` and `speed_vs_quality.png`.
    """
    from ecad_ray.search.compare import comparison_methods

    comparison_methods(specs=list(methods))  # a bad spec is one line before the search starts
    with reported_failures(config.output_dir), ray_session(config.address, _cpus(config)):
        front = run_search(config, RayEvaluator(config, _gpu(config)), progress)
        if methods:
            searched = [(r["name"], load_schedule(Path(config.output_dir) / r["file"])) for r in front]
            _compare(config, comparison_methods(specs=list(methods), searched=searched), config.output_dir)
        return front


def compare_on_ray(config: SearchConfig, methods: list, repeats: int = 1) -> list[dict]:
    """Score the uncached model and `methods` (`ecad_ray.search.compare.Method`) on the search
    pool of `config` (its model, job and objective; `--num-workers` actors)."""
    with reported_failures(config.output_dir), ray_session(config.address, _cpus(config)):
        return _rows(config, methods, repeats)


def _rows(config: SearchConfig, methods: list, repeats: int) -> list[dict]:
    from ecad_ray.metrics.pairwise import backbone_cached
    from ecad_ray.search.compare import compare_methods
    from ecad_ray.search.run import search_layout

    evaluator = RayEvaluator(config, _gpu(config))
    evaluator.args["with_lpips"] = config.lpips_random_backbone or backbone_cached("alex")
    return compare_methods(evaluator, methods, search_layout(config).spec, repeats, config.objective)


def _compare(config: SearchConfig, methods: list, folder, repeats: int = 1) -> list[dict]:
    from ecad_ray.search.compare import write_comparison

    rows = _rows(config, methods, repeats)
    write_comparison(rows, folder, f"{config.model}: caching methods ({len(config.job.rows())} images each)")
    return rows


def benchmark_methods(base, schedule_dir: str | None, specs: list[str], objective: str = "judge",
                      repeats: int = 1) -> list[dict]:
    """`ecad-ray benchmark --method`: the schedules of `schedule_dir` and the peers `specs` on the
    prompts of `base.input_embeddings` at `base`'s seeds, one table in `base.output_dir`."""
    from ecad_ray.benchmarking import schedule_files
    from ecad_ray.search.compare import comparison_methods
    from ecad_ray.search.evaluator import EvalJob, job_prompts
    from ecad_ray.search.objectives import check_objective
    from ecad_ray.search.run import search_layout

    prompts = job_prompts(base.model, None, base.input_embeddings, base.negative_prompt)
    job = EvalJob(prompts, base.num_images_per_prompt, base.start_seed, base.seed_step, base.negative_prompt,
                  base.input_embeddings, base.batch_size)
    config = SearchConfig(model=base.model, job=job, output_dir=base.output_dir, objective=check_objective(objective),
                          num_workers=base.num_workers,
                          threads_per_worker=base.threads_per_worker, address=base.address, device=base.device,
                          dtype=base.dtype, guidance_scale=base.guidance_scale)
    layout = search_layout(config)
    schedules = []
    for path in schedule_files(schedule_dir) if schedule_dir else []:
        schedule = load_schedule(path)
        layout.from_schedule(schedule, source=str(path))  # fits the model and its step count, or one line
        schedules.append((path.stem, schedule))
    methods = comparison_methods(schedules, specs)
    Path(base.output_dir).mkdir(parents=True, exist_ok=True)
    with reported_failures(base.output_dir), ray_session(base.address, _cpus(config)):
        return _compare(config, methods, base.output_dir, repeats)


def _cpus(config: SearchConfig) -> int:
    return config.num_workers * config.threads_per_worker + 1


def _gpu(config: SearchConfig) -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0 and config.device != "cpu"
