"""The plan of `generate` (and `benchmark`), and the Ray session plans run in.

    generate_stages(plan) = [StageSpec(TextEncoderStage), StageSpec(GeneratorStage, pool), [StageSpec(MetricsStage)]]
    job rows ─run_stages─▶ ... ─▶ driver: ImageWriter

The plan is data (`actors.pipeline`): a list of stage specs that `run_stages` checks and runs.
With a single generation worker the two model stages share one actor
(`EncodeThenGenerateStage`). Rows are small (ids, seeds, shard references); pixels only
travel from the generator to the driver, and Ray Data's streaming executor bounds how many
batches are in flight. The driver writes the PNGs, collects result rows for the table and
drives the progress bar.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from actors.generation import EncodeThenGenerateStage, GeneratorStage, TextEncoderStage
from actors.metrics import MetricsStage
from actors.pipeline import (
    StageSpec,
    check_plan,
    ray_log_level,
    run_stages,
)
from actors.writer import ImageWriter
from ecad_ray.config import GenerateConfig
from ecad_ray.embeddings import EmbeddingStore
from ecad_ray.errors import UserError, one_line, user_error_in
from ecad_ray.run import RunPlan, device_description, finish_run, plan_run, run_lock, start_run, write_error_log


@dataclass(frozen=True)
class RunSummary:
    """What a finished `generate` run produced."""

    output_dir: str
    new_images: int
    kept_images: int
    wall_seconds: float  # the run's wall-clock time, start to finish (run.json `wall_seconds`)
    results_path: str


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int):
    """Join `address` (or $RAY_ADDRESS) or start a local Ray on loopback for the run; leave an
    initialised Ray alone."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")  # set for a Ray Job's driver: join its cluster
    on_loopback = not address or _is_loopback(address)
    with loopback_only() if on_loopback else contextlib.nullcontext(), _ray_started(address, num_cpus):
        yield


def _is_loopback(address: str) -> bool:
    """True for `127.0.0.1:6379`, `localhost:6379`, `[::1]:6379`: a cluster on this machine only.

    A driver joining one must keep cluster mode off too, or Ray rewrites 127.0.0.1 to the
    machine's network address, where a loopback-bound cluster does not listen."""
    import ipaddress

    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


CLUSTER_MODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only():
    """While a local Ray starts, make every one of its servers bind to 127.0.0.1 only.

    Ray binds its servers (GCS, raylet, workers, object manager) to the node's IP, which on
    Linux it finds "from the perspective" of the network, so a plain local `ray.init` listens
    on every interface. With cluster mode off (the switch Ray itself uses on macOS and
    Windows) the node IP is the loopback address. Ray reads the switch when it is imported,
    so the module constant is set too in case something imported Ray earlier; both are put
    back afterwards so a later `--address` join in the same process is unaffected.
    Token authentication stays as Ray sets it (on by default): the project never disables it.
    """
    saved = os.environ.get(CLUSTER_MODE_ENV)
    os.environ[CLUSTER_MODE_ENV] = "0"
    from ray._private import ray_constants

    was = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = was
        if saved is None:
            os.environ.pop(CLUSTER_MODE_ENV, None)
        else:
            os.environ[CLUSTER_MODE_ENV] = saved


@contextlib.contextmanager
def _ray_started(address: str | None, num_cpus: int):
    """`ray.init` for one run (joining `address`, or a Ray of our own), shut down afterwards."""
    import ray

    # Ray Data's actors always log a C++ "constructor arguments in the object store" notice;
    # RAY_BACKEND_LOG_LEVEL=info brings backend logs back when debugging a cluster.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs = dict(include_dashboard=False, logging_level=ray_log_level(logging.WARNING), log_to_driver=False)
    # ray.init mostly waits on the processes it starts; import Ray Data (~1.4 s) meanwhile.
    preload = threading.Thread(target=importlib.import_module, args=("ray.data",), daemon=True)
    preload.start()
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError) as err:
            raise UserError(
                f"--address {address}: could not join the Ray cluster ({one_line(err)}); check that it is "
                "running, and if it uses token auth that RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, "
                "or ~/.ray/auth_token) are set here"
            ) from err
    else:
        # "local": a Ray of our own even when `ray start` left one running (or a stale address
        # file) on this machine; plain ray.init() would try to join that and fail
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    preload.join()
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def reported_failures(output_dir: str | Path):
    """A failure inside the plan leaves its traceback in `<run>/logs/error.log` and, when a stage
    named it (a `StageError` from a worker) or it is the user's to fix, surfaces as one
    `UserError` line that points at the log. Anything else is a bug and propagates as it is."""
    try:
        yield
    except Exception as err:
        log = write_error_log(output_dir, err)
        found = user_error_in(err)
        if found is None:
            raise
        raise UserError(f"{found} (full traceback: {log})") from err


def local_cpus(config: GenerateConfig) -> int:
    """CPUs for a local Ray: the generation actors' threads, plus one for the encoder (or metrics)."""
    return config.num_workers * config.threads_per_worker + 1


def _gpus_available() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def run_generate(config: GenerateConfig, progress=None) -> RunSummary:
    """Check the config, then stream every missing image through the Ray Data plan."""
    started = time.time()
    checked = plan_run(config)  # every check first: bad input writes nothing, not even the run folder
    if config.metrics:
        MetricsStage.validate(config.metrics, config.reference)  # fail before Ray starts
    with run_lock(config.output_dir):
        # re-planned: what is on disk now; the schedule parsed above is the one that travels
        return _run_locked(plan_run(config, checked.schedule), started, progress)


def _run_locked(plan: RunPlan, started: float, progress) -> RunSummary:
    """The run itself, while this process alone holds the run folder."""
    config = plan.config
    if plan.jobs:  # the plan's stages and columns do not depend on the cluster: check them before Ray starts
        check_plan(plan.jobs[0], generate_stages(plan, gpu=False))
    extra = {"device": device_description(config.device)}
    start_run(plan, extra)
    writer = ImageWriter(str(plan.output_dir), asdict(plan.settings))
    cache = CacheTotals()

    def written_batches():
        for batch in map(writer, stream_plan(plan)):
            cache.add(batch)
            if progress:
                progress(len(writer.records), len(plan.jobs))
            yield batch

    if plan.jobs:
        with reported_failures(plan.output_dir), ray_session(config.address, local_cpus(config)):
            if config.metrics:
                extra["metrics_tables"] = _write_metric_tables(plan, written_batches())
            else:
                for _ in written_batches():
                    pass
        EmbeddingStore(plan.store_root).save_index()
    extra["cache"] = asdict(cache) if plan.schedule is not None else None
    results = finish_run(plan, writer.records, started, extra)
    return RunSummary(str(plan.output_dir), len(writer.records), len(plan.kept), time.time() - started, str(results))


@dataclass
class CacheTotals:
    """What the caching schedule did over a run (run.json's `cache`), summed from the generator's
    per-row cache columns: sub-layer calls computed and served from the cache (over every
    worker), and the most bytes one worker's cache held at once."""

    computed: int = 0
    reused: int = 0
    peak_bytes: int = 0

    def add(self, batch: dict) -> None:
        if "cache_computed" not in batch:
            return
        self.computed += int(batch["cache_computed"].sum())
        self.reused += int(batch["cache_reused"].sum())
        self.peak_bytes = max(self.peak_bytes, int(batch["cache_peak_bytes"].max(initial=0)))


def _write_metric_tables(plan: RunPlan, batches) -> list[str]:
    """Feed the scored batches to the metric tables (metrics.parquet, summary.parquet)."""
    from ecad_ray.metrics.evaluate import write_metric_tables
    from ecad_ray.metrics.suite import MetricSuite

    cfg = plan.config
    metrics_path, summary_path, _ = write_metric_tables(
        plan.output_dir,
        batches,
        fid_ref=cfg.fid_ref if cfg.metrics.wants("fid") else None,
        extractor=lambda: MetricSuite(replace(cfg.metrics, metrics=("fid",)), None).scorer("fid"),
        resolution=(plan.settings.height, plan.settings.width),
    )
    return [str(metrics_path), str(summary_path)]


def generate_stages(plan: RunPlan, gpu: bool) -> list[StageSpec]:
    """The `generate` plan as data: encode, generate, [metrics], or with one worker and prompts
    still to embed the fused encode+generate stage (see `EncodeThenGenerateStage`).

    Text encoding is left out when every prompt is already in the store. Several workers share
    one encoder actor feeding the generator pool, so the text encoder is loaded once. Which
    stages run depends on the run alone; their resources and device also on `gpu` (the cluster
    has GPUs and the run may use them).
    """
    cfg = plan.config
    device = cfg.device if cfg.device != "auto" else ("cuda" if gpu else "cpu")
    resources = stage_resources(cfg, gpu)
    threads = cfg.threads_per_worker
    encoder = dict(model_spec=plan.model_spec, store_root=str(plan.store_root), device=device, dtype=cfg.dtype, threads=threads)
    generator = dict(model_spec=plan.model_spec, settings=asdict(plan.settings), store_root=str(plan.store_root), device=device,
                     dtype=cfg.dtype, schedule=plan.schedule, schedule_source=cfg.schedule or "", threads=threads)
    pool = cfg.pool_size()
    needs_encoding = any(not job["shard"] for job in plan.jobs)
    if needs_encoding and cfg.num_workers == 1:
        stages = [StageSpec(EncodeThenGenerateStage, dict(encoder=encoder, generator=generator), cfg.batch_size,
                            **resources["generate"], pool=pool)]
    else:
        # the encoder's batch size keeps one block per generation batch for the pool
        stages = [StageSpec(TextEncoderStage, encoder, cfg.batch_size, **resources["encode"])] if needs_encoding else []
        stages.append(StageSpec(GeneratorStage, generator, cfg.batch_size, **resources["generate"], pool=pool))
    if cfg.metrics:
        metrics = dict(config=replace(cfg.metrics, device=device), reference_dir=cfg.reference)
        stages.append(StageSpec(MetricsStage, metrics, cfg.batch_size, **resources["metrics"]))
    return stages


def stage_resources(cfg: GenerateConfig, gpu: bool) -> dict[str, dict[str, float]]:
    """What one actor of each `generate` stage asks Ray for: the one place these numbers live.

    On a GPU, 0.1 encoder + 0.8 generator + 0.1 metrics fit one GPU, and a generator needs one
    CPU to feed it. On CPUs, a generator gets its --threads-per-worker; the encoder and the
    metrics actor take a share of the one extra CPU a local Ray has (`local_cpus`).
    """
    if gpu:
        return {"encode": dict(num_cpus=0, num_gpus=0.1), "generate": dict(num_cpus=1, num_gpus=0.8),
                "metrics": dict(num_cpus=0, num_gpus=0.1)}
    return {"encode": dict(num_cpus=0.5, num_gpus=0), "generate": dict(num_cpus=cfg.threads_per_worker, num_gpus=0),
            "metrics": dict(num_cpus=0.25, num_gpus=0)}


def stream_plan(plan: RunPlan) -> Iterator[dict]:
    """Yield the generated batches (images, result columns, metric columns when asked) as the plan makes them.

    Ray must be running: the stages' resources and device follow the cluster's GPUs."""
    gpu = _gpus_available() and plan.config.device != "cpu"
    # one block per generation batch, so every worker of the pool gets work
    return run_stages(plan.jobs, generate_stages(plan, gpu), rows_per_block=plan.config.batch_size)


def run_benchmark(base: GenerateConfig, schedule_dir: str, progress=None) -> list[RunSummary]:
    """ECAD's generate_images: one embeddings store × every schedule in `schedule_dir`.

    Each schedule's images go to `<output_dir>/<schedule-name>/`; the all-recompute schedule
    runs first (it is the quality reference), and `<output_dir>/results.parquet` holds every
    run's rows with their schedule column. All runs share one Ray session.
    """
    from ecad_ray.benchmarking import combine_results, schedule_files

    files = schedule_files(schedule_dir)
    out = Path(base.output_dir)
    summaries = []
    with ray_session(base.address, local_cpus(base)):
        for path in files:
            cfg = replace(base, schedule=str(path), output_dir=str(out / path.stem))
            summaries.append(run_generate(cfg, progress))
    combine_results([Path(s.results_path) for s in summaries], out / "results.parquet")
    return summaries
