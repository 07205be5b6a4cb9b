"""The plan of `ecad-ray dataset generate`: ledger tasks in, class folders of images out.

    plan_dataset (checks, tasks)  ->  ledger.setup  ->  per model:
        encode: run_stages([TextEncoderStage]) over the prompts not yet in OUT/embeddings
        generate: ElasticPool(GeneratorStage, min..max workers), fed batch by batch from
                  tasks this process claims from the ledger; the driver writes each image
                  (atomically) and marks a task done once all its images are on disk
    ->  OUT/dataset.parquet once no task is left (whichever process gets there writes it)

The stages are `generate`'s own (actors/generation.py), so an image is made exactly as
`ecad-ray generate` makes it from the same prompt, seed, model and schedule. Unlike `generate`,
the run folder is not locked: the ledger is the coordination, so a second process (here or on
another node seeing the same folder) joins a running dataset and takes pending tasks, and a
rerun after any crash resumes. Work is claimed a task at a time, only when the pool runs short
of batches, so no process hoards tasks another could be doing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from actors.generation import GeneratorStage, TextEncoderStage
from actors.pipeline import ElasticPool, StageSpec, run_stages
from actors.plan import _gpus_available, local_cpus, ray_session, reported_failures, stage_resources
from ecad_ray.config import GenerateConfig
from ecad_ray.dataset.generation import DatasetConfig, DatasetPlan, DatasetRow, plan_dataset, write_dataset_table, write_image
from ecad_ray.dataset.ledger import Ledger, worker_id
from ecad_ray.embeddings import EmbeddingStore
from ecad_ray.errors import UserError, user_error_in
from ecad_ray.models.families import generation_family
from ecad_ray.run import resolve_image_settings

POLL_SECONDS = 1.0  # how often a driver with nothing to do looks at the ledger again
LEDGER_TEST_GATE_ENV = "ECAD_RAY_TEST_LEDGER_GATE"


@dataclass(frozen=True)
class DatasetSummary:
    """What one `dataset generate` process did."""

    output_dir: str
    new_images: int  # written by this process
    kept_images: int  # on disk before it started
    tasks_done: int  # finished by this process
    wall_seconds: float
    table_path: str | None  # dataset.parquet, when every task is done
    ledger_seconds: float  # time in ledger calls on the driver's loop (heartbeats excluded)
    generation_seconds: float  # summed generation time of the images it made


def model_config(config: DatasetConfig, model: str) -> GenerateConfig:
    """The `generate` configuration one model of the dataset runs with (resolution, resources)."""
    return GenerateConfig(model=model, output_dir=config.output_dir, batch_size=config.batch_size,
                          steps=config.steps, schedule=config.schedule, start_seed=config.start_seed,
                          num_workers=config.num_workers, min_workers=config.min_workers,
                          threads_per_worker=config.threads_per_worker, address=config.address, device=config.device)


def run_dataset_generate(config: DatasetConfig, progress=None) -> DatasetSummary:
    """Check everything, then make every image of the dataset this process can claim; raises `UserError`.

    `progress(done, total)`: images written by this process so far, of those missing at its start.
    """
    started = time.time()
    config.check()
    models = [model_config(config, m) for m in config.models]
    resolved = [resolve_image_settings(gc) for gc in models]  # every model found and its schedule checked
    plan = plan_dataset(config, resolved[0][1].schedule)
    missing = sum(len(plan.missing_rows(t)) for t in plan.tasks)
    total = sum(t.count for t in plan.tasks)
    # every check passed: from here on the folder is written
    ledger = Ledger(plan.output_dir, config.lease_seconds)
    ledger.setup(plan.meta, plan.tasks)
    ledger.retry_failed()
    me = worker_id()
    run = _Run(plan, ledger, me, progress, missing)
    try:
        with _heartbeats(plan.output_dir, me, config.lease_seconds), reported_failures(plan.output_dir), \
                ray_session(config.address, local_cpus(models[0])):
            for gc, (model_spec, settings, schedule) in zip(models, resolved):
                run.model(gc, model_spec, settings, schedule)
    finally:
        ledger.release(me)  # an aborted or interrupted run hands its tasks back at once
    failed = [t for t in ledger.tasks() if t.state == "failed"]
    if failed:
        first = failed[0]
        raise UserError(f"{len(failed)} task(s) failed, e.g. task {first.spec.task_id} ({first.spec.class_name}, "
                        f"{first.spec.model}): {first.error}; `ecad-ray dataset status {plan.output_dir}` lists them, "
                        "rerun the command to retry them")
    table = str(write_dataset_table(plan)) if ledger.unfinished() == 0 else None
    return DatasetSummary(str(plan.output_dir), run.written, total - missing, run.tasks_done, time.time() - started,
                          table, ledger.seconds, run.generation_seconds)


class _Run:
    """One process's share of the dataset: claim, generate, write, mark done."""

    def __init__(self, plan: DatasetPlan, ledger: Ledger, me: str, progress, missing: int):
        self.plan, self.ledger, self.me, self.progress, self.missing = plan, ledger, me, progress, missing
        self.written = 0
        self.tasks_done = 0
        self.generation_seconds = 0.0
        self.gated = False

    def model(self, gc: GenerateConfig, model_spec, settings, schedule) -> None:
        """Every task of one model this process can take, until none is pending or running anywhere."""
        store_root = self.plan.output_dir / "embeddings"
        gpu = _gpus_available() and gc.device != "cpu"
        device = gc.device if gc.device != "auto" else ("cuda" if gpu else "cpu")
        resources = stage_resources(gc, gpu)
        family = generation_family(model_spec.family)
        negative = settings.negative_prompt if family.uses_negative_prompt else None
        refs = self._encode(gc, model_spec, settings, negative, store_root, device, resources["encode"])
        generator = dict(model_spec=model_spec, settings=asdict(settings), store_root=str(store_root), device=device,
                         dtype=gc.dtype, schedule=schedule, schedule_source=gc.schedule or "",
                         threads=gc.threads_per_worker)
        pool = ElasticPool(StageSpec(GeneratorStage, generator, gc.batch_size, **resources["generate"],
                                     pool=gc.pool_size()))
        try:
            self._drive(pool, gc, refs)
        finally:
            pool.close()

    def _encode(self, gc, model_spec, settings, negative, store_root: Path, device: str, resources: dict) -> dict:
        """Embed every prompt of the model's unfinished classes that the store lacks; the store's refs."""
        store = EmbeddingStore(store_root)
        refs = store.lookup(model_spec.name, negative)
        classes = {t.spec.class_name for t in self.ledger.tasks()
                   if t.spec.model == gc.model and t.state in ("pending", "running")}
        texts = sorted({p for c in classes for p in self.plan.prompts[c]} - set(refs))
        if not texts:
            return refs
        from ecad_ray.dataset.generation import prompt_id

        rows = [dict(prompt=t, negative_prompt=settings.negative_prompt, prompt_id=prompt_id(t), partition="",
                     shard="", row=-1) for t in texts]
        encoder = dict(model_spec=model_spec, store_root=str(store_root), device=device, dtype=gc.dtype,
                       threads=gc.threads_per_worker)
        for _ in run_stages(rows, [StageSpec(TextEncoderStage, encoder, max(gc.batch_size, 16), **resources)]):
            pass
        store.save_index()
        return store.lookup(model_spec.name, negative)

    def _drive(self, pool: ElasticPool, gc: GenerateConfig, refs: dict) -> None:
        queue: deque[tuple[str, list[DatasetRow]]] = deque()  # batches waiting for an actor
        left: dict[str, int] = {}  # open task -> batches not yet back
        in_flight: dict = {}  # ref -> (task id, rows)
        while True:
            pool.grow()
            while len(queue) < max(1, pool.size):
                task = self.ledger.claim(self.me, gc.model)
                if task is None:
                    break
                self._test_gate()
                rows = self.plan.missing_rows(task)
                batches = [rows[i:i + gc.batch_size] for i in range(0, len(rows), gc.batch_size)]
                if not batches:  # every image already on disk (the driver died before marking it)
                    self._finish(task.task_id)
                    continue
                left[task.task_id] = len(batches)
                queue.extend((task.task_id, b) for b in batches)
            while queue and pool.idle:
                task_id, rows = queue.popleft()
                in_flight[pool.submit(_batch(rows, refs))] = (task_id, rows)
            if not in_flight:
                if queue:  # batches wait for the pool's first actors to start
                    time.sleep(0.05)
                    continue
                if self.ledger.unfinished(gc.model) == 0:
                    return
                time.sleep(POLL_SECONDS)  # other processes hold the rest; a lost lease comes back to claim
                continue
            for ref in pool.wait(timeout=POLL_SECONDS):
                task_id, rows = in_flight.pop(ref)
                if task_id not in left:
                    continue  # its task failed with an earlier batch
                try:
                    out = _get(ref)
                except UserError as err:
                    if "starting the worker" in str(err):
                        raise
                    self.ledger.fail(task_id, self.me, str(err))
                    del left[task_id]
                    kept = [(t, b) for t, b in queue if t != task_id]
                    queue.clear()
                    queue.extend(kept)
                    continue
                self._write(rows, out)
                left[task_id] -= 1
                if left[task_id] == 0:
                    del left[task_id]
                    self._finish(task_id)

    def _write(self, rows: list[DatasetRow], out: dict) -> None:
        for row, image in zip(rows, out["image"]):
            write_image(image, self.plan.output_dir / row.path, self.plan.config.size, self.plan.config.format)
        self.generation_seconds += float(np.sum(out["seconds_per_image"]))
        self.written += len(rows)
        if self.progress:
            self.progress(self.written, self.missing)

    def _finish(self, task_id: str) -> None:
        if self.ledger.finish(task_id, self.me):
            self.tasks_done += 1

    def _test_gate(self, timeout: float = 120.0) -> None:
        """Test-only: after this process's first claim, wait for the test's go-ahead.

        Unset (always, outside the two-process test) this returns at once. Set to a folder, the
        driver writes `claimed` there and waits for `go`, so the test knows this process holds a
        task while a second process starts: a deterministic trigger, not a timing race.
        """
        folder = os.environ.get(LEDGER_TEST_GATE_ENV)
        if not folder or self.gated:
            return
        self.gated = True
        (Path(folder) / "claimed").touch()
        deadline = time.monotonic() + timeout
        while not (Path(folder) / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _batch(rows: list[DatasetRow], refs: dict) -> dict:
    """A generation batch: each row's embedding in the store and its seed, named for error lines."""
    missing = [r.prompt for r in rows if r.prompt not in refs]
    if missing:
        raise UserError(f"embeddings: no embedding for prompt {missing[0]!r} in the store (was it encoded?)")
    return {
        "item_name": np.array([r.path for r in rows], dtype=object),
        "seed": np.array([r.seed for r in rows], dtype=np.int64),
        "shard": np.array([refs[r.prompt].shard for r in rows], dtype=object),
        "row": np.array([refs[r.prompt].row for r in rows], dtype=np.int64),
    }


def _get(ref) -> dict:
    """A finished batch's columns; a stage's failure as its one-line `UserError`."""
    import ray

    try:
        return ray.get(ref)
    except Exception as err:  # noqa: BLE001  (a worker's failure, named by its stage)
        found = user_error_in(err)
        if found is None:
            raise
        raise found from err


@contextlib.contextmanager
def _heartbeats(output_dir: Path, me: str, lease_seconds: float):
    """Keep this process's leases alive from a thread of its own, every third of a lease."""
    stop = threading.Event()

    def beat():
        ledger = Ledger(output_dir, lease_seconds)
        try:
            while not stop.wait(lease_seconds / 3):
                ledger.heartbeat(me)
        finally:
            ledger.close()

    thread = threading.Thread(target=beat, name="ledger-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
