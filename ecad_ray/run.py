"""Everything about a `generate` run that is decided before any model runs.

`plan_run` checks the inputs (prompts, model, sizes, counts, output folder), works out which
images are still missing (resume), and lists one job row per missing image. Nothing is
written until every check has passed. `finish_run` writes the results table and run.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ecad_ray.atomic import remove_leftovers, write_text_atomic
from ecad_ray.config import GenerateConfig, ImageSettings
from ecad_ray.embeddings import EmbeddingStore
from ecad_ray.errors import UserError
from ecad_ray.models.families import generation_family
from ecad_ray.models.loading import fetch_weights
from ecad_ray.models.registry import ModelSpec, resolve_model
from ecad_ray.prompts import Prompt, from_texts, read_prompt_file
from ecad_ray.records import RESULTS_FILE, image_name, read_png_record, write_results

if TYPE_CHECKING:
    from ecad_ray.caching.schedule import Schedule

RUN_FILE = "run.json"
ERROR_LOG = "logs/error.log"  # full traceback of the failure the terminal reported in one line
# settings that, when they differ from an existing run.json, make its images unusable
_IMAGE_KEYS = ("model", "height", "width", "steps", "guidance_scale", "negative_prompt", "schedule")


@dataclass
class RunPlan:
    """A checked run: where to write, what to generate, what is already there."""

    config: GenerateConfig
    model_spec: ModelSpec
    settings: ImageSettings
    output_dir: Path
    store_root: Path  # where embeddings are read from (and written to, unless --input-embeddings)
    jobs: list[dict]  # one row per image still to generate
    kept: list[dict]  # result rows of complete images found on disk (resume)
    num_prompts: int
    macs: int | None = None  # transformer MACs per image (`model` convention: the model's own text length)
    schedule: Schedule | None = None  # the parsed, checked --schedule (None: uncached); it travels to the actors


def load_run_schedule(config: GenerateConfig) -> Schedule | None:
    """Parse `--schedule` (None without one): the run's only parse; the object travels from here."""
    if not config.schedule:
        return None
    path = Path(config.schedule)
    if not path.is_file():
        raise UserError(f"--schedule {config.schedule}: no such file")
    from ecad_ray.caching import load_schedule

    return load_schedule(path)


def plan_run(config: GenerateConfig, schedule: Schedule | None = None) -> RunPlan:
    """Validate the whole configuration and list the missing images; raises `UserError`.

    `schedule`: `config.schedule` already parsed (`load_run_schedule`, or an earlier plan's),
    so re-planning a run does not parse it again."""
    config.check_counts()
    model_spec, settings, schedule = resolve_image_settings(config, schedule)
    config = replace(config, steps=settings.steps) if schedule is not None and not config.steps else config
    family = generation_family(model_spec.family)
    output_dir = Path(config.output_dir).expanduser()
    _check_writable(output_dir)

    store_root = output_dir / "embeddings"
    if config.input_embeddings:
        store_root = Path(config.input_embeddings).expanduser()
        if not store_root.is_dir():
            raise UserError(f"--input-embeddings {store_root}: no such folder")
        store = EmbeddingStore(store_root)
        store.require_model(model_spec.name)
    else:
        store = EmbeddingStore(store_root)

    prompts = _prompts(config, store, model_spec, settings)
    _check_resume(output_dir, settings, config.overwrite)
    kept = [] if config.overwrite else _complete_images(output_dir, settings)
    done = {(r["prompt_id"], r["seed"]) for r in kept}
    refs = store.lookup(model_spec.name, settings.negative_prompt if family.uses_negative_prompt else None)
    if config.input_embeddings:
        missing = [p.text for p in prompts if p.text not in refs]
        if missing:
            raise UserError(
                f"--input-embeddings {store_root}: no embeddings for prompt {missing[0]!r} "
                f"with negative prompt {settings.negative_prompt!r} ({len(missing)} missing)"
            )
    seeds = [config.start_seed + j * config.seed_step for j in range(config.num_images_per_prompt)]
    jobs = []
    for p in prompts:
        ref = refs.get(p.text)
        for seed in seeds:
            if (p.prompt_id, seed) in done:
                continue
            jobs.append(
                {
                    "prompt_index": p.index,
                    "prompt_id": p.prompt_id,
                    "prompt": p.text,
                    "negative_prompt": settings.negative_prompt,
                    "partition": p.partition,
                    "seed": seed,
                    "model": model_spec.name,
                    "schedule": settings.schedule,
                    "shard": ref.shard if ref else "",
                    "row": ref.row if ref else -1,
                }
            )
    wanted = {(p.prompt_id, s) for p in prompts for s in seeds}
    kept = [r for r in kept if (r["prompt_id"], r["seed"]) in wanted]
    macs = transformer_macs(model_spec, settings, schedule)
    return RunPlan(config, model_spec, settings, output_dir, store_root, jobs, kept, len(prompts), macs, schedule)


def resolve_image_settings(
    config: GenerateConfig, schedule: Schedule | None = None
) -> tuple[ModelSpec, ImageSettings, Schedule | None]:
    """The model (weights found), the settings that decide its pixels and the checked schedule.

    The part of `plan_run` that knows nothing of prompts or run folders, so other plans that
    generate with `config.model` (`dataset generate`) resolve a model exactly as `generate` does."""
    model_spec = resolve_model(config.model)
    if config.transformer_weights:
        weights = Path(config.transformer_weights).expanduser()
        if not weights.is_file():
            raise UserError(f"--transformer-weights {weights}: no such file")
        model_spec = replace(model_spec, transformer_file=str(weights.resolve()))
    model_spec = fetch_weights(model_spec)
    if schedule is None:
        schedule = load_run_schedule(config)
    schedule_name, schedule_steps = _check_schedule(config, model_spec, schedule)
    if schedule_steps and not config.steps:
        config = replace(config, steps=schedule_steps)
    return model_spec, ImageSettings.resolve(config, model_spec, schedule_name), schedule


def transformer_macs(model_spec: ModelSpec, settings: ImageSettings, schedule: Schedule | None) -> int | None:
    """Analytic transformer MACs of one image under the run's schedule (None: shapes unknown)."""
    from ecad_ray.caching import resolve_spec, schedule_macs
    from ecad_ray.caching.baselines import default_schedule

    try:
        spec = resolve_spec(model_spec.name)
    except (UserError, OSError, ValueError, KeyError):
        return None
    if (spec.height, spec.width) != (settings.height, settings.width):
        area = settings.height * settings.width / (spec.height * spec.width)
        spec = replace(spec, height=settings.height, width=settings.width,
                        image_tokens=round(spec.image_tokens * area))
    if schedule is None:
        schedule = default_schedule(spec, settings.steps)
    return schedule_macs(schedule, spec)


def _check_schedule(config: GenerateConfig, model_spec: ModelSpec, schedule: Schedule | None) -> tuple[str, int | None]:
    """(schedule name, its step count) after checking the parsed schedule against the model and --steps.

    Models without a known transformer config (an uncached hub id) are checked again by each
    generation actor against the loaded transformer.
    """
    if schedule is None:
        return "none", None
    path = Path(config.schedule)
    from ecad_ray.caching import resolve_spec, validate_schedule

    try:
        spec = resolve_spec(model_spec.name)
    except (UserError, OSError, ValueError, KeyError):
        spec = None
    if spec is not None:
        validate_schedule(schedule, spec, source=str(path))
    if config.steps and config.steps != schedule.num_inference_steps:
        raise UserError(
            f"--steps {config.steps}: schedule {path} is made for {schedule.num_inference_steps} steps; "
            "drop --steps or pick a schedule made for this many"
        )
    return path.stem, schedule.num_inference_steps


def _prompts(config: GenerateConfig, store: EmbeddingStore, model_spec: ModelSpec, settings: ImageSettings) -> list[Prompt]:
    if config.prompts:
        return from_texts(list(config.prompts))
    if config.prompt_file:
        return read_prompt_file(config.prompt_file)
    # only --input-embeddings: every prompt of the store, in the store's order
    rows = [r for r in store.index().to_pylist() if r["model"] == model_spec.name]
    seen: dict[str, Prompt] = {}
    for r in rows:
        if r["prompt_id"] not in seen:
            seen[r["prompt_id"]] = Prompt(len(seen), r["prompt_id"], r["prompt"], r["partition"])
    return list(seen.values())


def _check_writable(output_dir: Path) -> None:
    """Refuse an output folder that cannot be created or written, before writing anything."""
    probe_dir = output_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"--output-dir {output_dir}: {probe_dir} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as err:
        raise UserError(f"--output-dir {output_dir}: not writable ({err.strerror})") from err


def _check_resume(output_dir: Path, settings: ImageSettings, overwrite: bool) -> None:
    run_file = output_dir / RUN_FILE
    if overwrite or not run_file.is_file():
        return
    try:
        previous = json.loads(run_file.read_text())["settings"]
    except (OSError, KeyError, json.JSONDecodeError):
        return
    current = asdict(settings)
    for key in _IMAGE_KEYS:
        if previous.get(key) != current[key]:
            raise UserError(
                f"--output-dir {output_dir}: holds a run made with {key}={previous.get(key)!r}, "
                f"this run has {key}={current[key]!r}; use another --output-dir or --overwrite"
            )


def _complete_images(output_dir: Path, settings: ImageSettings) -> list[dict]:
    """Result rows of the images already on disk made with `settings` (PNG writes are atomic)."""
    current = asdict(settings)
    images = output_dir / "images"
    if not images.is_dir():
        return []
    rows = []
    for path in sorted(images.glob("*.png")):
        record = read_png_record(path)
        if not record or path.name != image_name(record["prompt_index"], record["prompt_id"], record["seed"]):
            continue
        if all(record.get(k) == current[k] for k in _IMAGE_KEYS if k != "negative_prompt"):
            rows.append(record)
    return rows


LOCK_FILE = ".ecad-ray.lock"


@contextlib.contextmanager
def run_lock(output_dir: str | Path):
    """Hold the run folder for this process: a second run into it is refused in one line.

    An OS file lock (flock), so it is released when the process ends however it ends (a
    SIGKILLed driver leaves no stale lock) and two processes can never both write one folder.
    Taking it also clears the temporary files of writes an earlier, killed run never finished.
    """
    import fcntl
    import socket

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"--output-dir {output_dir}: another ecad-ray run ({holder}) is writing there; "
                "wait for it to finish or use another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        remove_leftovers(output_dir)  # a driver SIGKILLed mid-write left its temporary file; none writes now
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_run(plan: RunPlan, extra: dict | None = None) -> None:
    """Create the run folder and record the settings first, so an interrupted run resumes safely."""
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    write_run_json(plan, {"status": "running", **(extra or {})})


def finish_run(plan: RunPlan, new_rows: list[dict], started: float, extra: dict | None = None) -> Path:
    """Write results.parquet (kept + new rows) and the final run.json; returns the results path."""
    results_path = plan.output_dir / RESULTS_FILE
    write_results(plan.kept + new_rows, results_path)
    write_run_json(
        plan,
        {
            "status": "complete",
            "images": {"new": len(new_rows), "kept": len(plan.kept)},
            "wall_seconds": round(time.time() - started, 3),  # as `var generate` records it
            **(extra or {}),
        },
    )
    return results_path


def write_run_json(plan: RunPlan, fields: dict) -> None:
    """Atomically write run.json: the full config, resolved settings, versions and `fields`."""
    info = {
        "config": plan.config.to_dict(),
        "settings": asdict(plan.settings),
        "model_spec": {k: v for k, v in asdict(plan.model_spec).items() if k != "notes"},
        "embeddings": str(plan.store_root),
        "macs": plan.macs,
        "macs_convention": "model",  # ecad_ray.caching.macs.MODEL: the text length the model runs
        "versions": package_versions(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **fields,
    }
    write_text_atomic(plan.output_dir / RUN_FILE, json.dumps(info, indent=2, default=str))


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide the pixels."""
    out = {}
    for name in ("ecad-ray", "torch", "diffusers", "transformers", "ray", "safetensors", "pyarrow", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_description(device: str = "auto") -> str:
    """The accelerator a run uses, in words (recorded in run.json)."""
    import torch

    if device in ("auto", None) and torch.cuda.is_available() or str(device).startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def write_error_log(output_dir: str | Path, err: BaseException) -> Path:
    """Write `err`'s whole traceback (with a worker's remote traceback) to `<run>/logs/error.log`.

    The terminal gets one line; whoever debugs gets everything here, replaced atomically by the
    next failure of the same run folder.
    """
    import traceback

    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return write_text_atomic(Path(output_dir) / ERROR_LOG, text)
