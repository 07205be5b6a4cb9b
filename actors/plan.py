"""The Ray Data plan of `generate`, and the Ray session it runs in.

    job rows ─map_batches(TextEncoderStage)─▶ embeddings store (shards written by the stage)
             ─map_batches(GeneratorStage, actor pool)─▶ [MetricsStage] ─▶ driver: ImageWriter

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
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from actors.generation import EncodeThenGenerateStage, GeneratorStage, TextEncoderStage
from actors.writer import ImageWriter
from actors.metrics import MetricsStage
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
    seconds: float
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
    kwargs = dict(include_dashboard=False, logging_level=_ray_log_level(logging.WARNING), log_to_driver=False)
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


VERBOSE_ENV = "ECAD_RAY_VERBOSE"  # set by `ecad-ray --verbose`


def _ray_log_level(verbose_level: int) -> int:
    """Ray's own warnings and errors stay out of the terminal unless `ecad-ray --verbose`."""
    return verbose_level if os.environ.get(VERBOSE_ENV) else logging.CRITICAL


def local_cpus(config: GenerateConfig) -> int:
    """CPUs for a local Ray: the generation actors' threads, plus one for the encoder (or metrics)."""
    return config.num_workers * config.threads_per_worker + 1


def _gpus_available() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def run_generate(config: GenerateConfig, progress=None) -> RunSummary:
    """Check the config, then stream every missing image through the Ray Data plan."""
    started = time.time()
    plan_run(config)  # every check first: bad input writes nothing, not even the run folder
    if config.metrics:
        MetricsStage.validate(config.metrics, config.reference)  # fail before Ray starts
    with run_lock(config.output_dir):
        return _run_locked(plan_run(config), started, progress)  # re-planned: what is on disk now


def _run_locked(plan: RunPlan, started: float, progress) -> RunSummary:
    """The run itself, while this process alone holds the run folder."""
    config = plan.config
    extra = {"device": device_description(config.device)}
    start_run(plan, extra)
    writer = ImageWriter(str(plan.output_dir), asdict(plan.settings))

    def written_batches():
        for batch in map(writer, stream_plan(plan)):
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
    results = finish_run(plan, writer.records, started, extra)
    return RunSummary(str(plan.output_dir), len(writer.records), len(plan.kept), time.time() - started, str(results))


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


def quiet_ray_data() -> None:
    """No Ray Data progress bars or execution banners: the run draws its own progress bar; and a
    stage's own exception (the `StageError` naming stage and item) reaches the driver as the
    cause, not replaced by Ray Data's generic "UDF failed to process a data block"."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.raise_original_map_exception = True
    # after Ray Data configured its logging; a failure reaches the user as one line anyway, its
    # traceback in the run's logs/error.log
    logging.getLogger("ray.data").setLevel(_ray_log_level(logging.INFO))


def stream_plan(plan: RunPlan):
    """Yield the generated batches (images, result columns, metric columns when asked) as the plan makes them."""
    import ray

    cfg = plan.config
    quiet_ray_data()
    gpu = _gpus_available() and cfg.device != "cpu"
    device = cfg.device if cfg.device != "auto" else ("cuda" if gpu else "cpu")

    # one block per generation batch, so every worker of the pool gets work
    ds = ray.data.from_items(plan.jobs, override_num_blocks=max(1, math.ceil(len(plan.jobs) / cfg.batch_size)))
    ds = _add_model_stages(ds, plan, device, gpu)
    if cfg.metrics:
        ds = ds.map_batches(
            MetricsStage,
            fn_constructor_kwargs=dict(config=replace(cfg.metrics, device=device), reference_dir=cfg.reference),
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0 if gpu else 0.25,
            num_gpus=0 if not gpu else 0.1,
        )
    # prefetch_batches=0: with Ray Data's default of 1 the driver got each batch only once the
    # next one was written, adding a whole batch of compute to the first image's latency.
    yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)


def _add_model_stages(ds, plan: RunPlan, device: str, gpu: bool):
    """Text encoding (skipped when every prompt is already in the store), then generation.

    One worker: both in one actor (`EncodeThenGenerateStage`). Several: one shared encoder
    actor feeding the generator pool, so the text encoder is loaded once.
    """
    import ray

    cfg = plan.config
    threads = cfg.threads_per_worker
    encoder = dict(spec=plan.spec, store_root=str(plan.store_root), device=device, dtype=cfg.dtype, threads=threads)
    generator = dict(spec=plan.spec, settings=asdict(plan.settings), store_root=str(plan.store_root), device=device,
                     dtype=cfg.dtype, schedule_path=cfg.schedule, threads=threads)
    pool = dict(
        batch_size=cfg.batch_size,
        compute=_generation_pool(cfg),
        num_cpus=1 if gpu else threads,
        num_gpus=0.8 if gpu else 0,
    )
    needs_encoding = any(not job["shard"] for job in plan.jobs)
    if needs_encoding and cfg.num_workers == 1:
        return ds.map_batches(EncodeThenGenerateStage, fn_constructor_kwargs=dict(encoder=encoder, generator=generator),
                              **pool)
    if needs_encoding:
        ds = ds.map_batches(
            TextEncoderStage,
            fn_constructor_kwargs=encoder,
            batch_size=cfg.batch_size,  # keeps one block per generation batch for the pool
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0 if gpu else 0.5,
            num_gpus=0.1 if gpu else 0,  # 0.1 encoder + 0.8 generator + 0.1 metrics fit one GPU
        )
    return ds.map_batches(GeneratorStage, fn_constructor_kwargs=generator, **pool)


def _generation_pool(cfg: GenerateConfig):
    """A fixed pool of --num-workers actors, or with --min-workers below it an autoscaling one:
    Ray Data starts --min-workers and adds actors (up to --num-workers) while batches queue up
    and the cluster has room, e.g. when a node joins mid-run."""
    import ray

    low, high = cfg.pool_size()
    if low == high:
        return ray.data.ActorPoolStrategy(size=high)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


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
