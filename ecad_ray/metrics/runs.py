"""Reading runs: their per-image results tables and images, for `generate` and `var generate` alike.

Both kinds of run folder hold `results.parquet` (`ecad_ray.records.RESULTS_SCHEMA`, one row per
image: prompt_id, prompt, seed, model, schedule, pruning, height, width, steps,
guidance_scale, image_path, seconds_per_image, macs; partition optional). A `generate` run keeps its
images under `images/` and may give its MACs once in `run.json` (applied to every image whose
row has none); a `var generate` run keeps them in `<item>/image.png` and records MACs per row
(pruning may differ per image). Image paths are relative to the run directory (absolute paths
are accepted too). A table without a `pruning` column (runs made before VAR runs shared the
table) reads as pruning "none".

What a run changed is its setting, the pair (schedule, pruning): "none" where one does not
apply (a DiT run is unpruned, a VAR run uncached). Each run holds one setting, so comparing
settings means several runs: every function here takes either one run directory or a folder
whose subfolders are runs (e.g. `runs/cmp/none`, `runs/cmp/fast`, ...), read as one table with
image paths relative to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecad_ray.errors import UserError
from ecad_ray.metrics.fid import load_rgb
from ecad_ray.records import NOT_APPLIED, RESULTS_FILE, current_name, renamed_legacy

RESULTS = RESULTS_FILE
REQUIRED_COLUMNS = ("prompt_id", "prompt", "seed", "model", "schedule", "image_path")
# Names the all-recompute (uncached) schedule, or the unpruned pruning, goes by: tried in order when none is given.
REFERENCE_SCHEDULE_NAMES = ("none", "baseline", "all-recompute", "no-cache", "uncached", "default", "full")


def run_dirs(root: Path, option: str = "RUN_DIR") -> list[Path]:
    """`root` itself when it is a run, else its direct subfolders that are runs (sorted)."""
    root = Path(root)
    if (root / RESULTS).is_file():
        return [root]
    runs = sorted(p for p in root.iterdir() if (p / RESULTS).is_file()) if root.is_dir() else []
    if not runs:
        raise UserError(f"{option} {root}: no {RESULTS} in it nor in its subfolders "
                        "(not a `generate` or `var generate` run?)")
    return runs


def check_distinct_schedules(root: Path, option: str = "RUN_DIR") -> None:
    """Refuse a folder where two runs hold the same model + setting (their rows would merge)."""
    owner: dict[tuple[str, str, str], Path] = {}
    for run in run_dirs(root, option):
        table = read_results(run, ["model", "schedule", "pruning"], option)
        for key in set(zip(*(table.column(c).to_pylist() for c in ("model", "schedule", "pruning")))):
            if key in owner:
                held = ", ".join(f"{kind} {name}" for kind, name in (("schedule", key[1]), ("pruning", key[2]))
                                 if name != NOT_APPLIED) or "schedule none"
                raise UserError(
                    f"{option} {root}: runs {owner[key].name} and {run.name} both hold {held} "
                    f"of model {key[0]}; score them separately (--reference for the baseline run)"
                )
            owner[key] = run


def results_file(run_dir: Path, option: str = "RUN_DIR") -> pq.ParquetFile:
    """One run's `results.parquet`, checked for the columns metrics need."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        raise UserError(f"{option} {run_dir}: no {RESULTS} (not a `generate` or `var generate` run?)")
    file = pq.ParquetFile(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in file.schema_arrow.names]
    if missing:
        raise UserError(f"{path}: lacks columns {', '.join(missing)}")
    return file


def read_results(root: Path, columns: list[str], option: str = "RUN_DIR") -> pa.Table:
    """The given columns of every run under `root` (missing optional columns come back null,
    a missing `pruning` as "none")."""
    tables = []
    for run in run_dirs(root, option):
        file = results_file(run, option)
        stored = {current_name(n): n for n in file.schema_arrow.names}  # today's name -> the file's
        have = [c for c in columns if c in stored]
        table = file.read(columns=[stored[c] for c in have]).rename_columns(have)
        for c in columns:
            if c not in have:
                table = table.append_column(c, _missing_column(c, table.num_rows))
        if "image_path" in columns:
            paths = [_relative(root, run, p) for p in table.column("image_path").to_pylist()]
            table = table.set_column(table.column_names.index("image_path"), "image_path", pa.array(paths, pa.string()))
        tables.append(table.select(columns))
    return pa.concat_tables(tables, promote_options="permissive")


def iter_result_batches(root: Path, batch_size: int) -> Iterator[dict]:
    """Stream every run's results as column dicts of up to `batch_size` rows, `image` loaded.

    `image_path` is rewritten relative to `root`, so tables written there point at the images.
    """
    root = Path(root)
    for run in run_dirs(root):
        macs = run_macs(run)
        for record_batch in results_file(run).iter_batches(batch_size=batch_size):
            batch = renamed_legacy(record_batch.to_pydict())
            n = record_batch.num_rows
            batch.setdefault("pruning", [NOT_APPLIED] * n)
            batch["macs"] = [macs if m is None else m for m in batch.get("macs", [None] * n)]
            batch["image_path"] = [_relative(root, run, p) for p in batch["image_path"]]
            batch["image"] = [load_rgb(resolve_image(root, p)) for p in batch["image_path"]]
            yield batch


def run_macs(run: Path) -> float | None:
    """MACs per image a run recorded in `run.json` (`macs` at the top or under `settings`), if any."""
    path = Path(run) / "run.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    value = info.get("macs", (info.get("settings") or {}).get("macs"))
    return float(value) if isinstance(value, (int, float)) else None


def _missing_column(name: str, n: int) -> pa.Array:
    """A column an older or foreign results table lacks: "none" for pruning, else nulls."""
    return pa.array([NOT_APPLIED] * n, pa.string()) if name == "pruning" else pa.nulls(n)


def _relative(root: Path, run: Path, image_path: str) -> str:
    path = Path(image_path)
    if path.is_absolute() or run == root:
        return str(image_path)
    return str(run.relative_to(root) / path)


def resolve_image(run_dir: Path, image_path: str) -> Path:
    """An image path from a results table, made absolute against its run directory."""
    path = Path(image_path)
    return path if path.is_absolute() else Path(run_dir) / path


def settings_of(root: Path, option: str = "RUN_DIR") -> list[tuple[str, str]]:
    """The distinct (schedule, pruning) settings under `root`, in first-seen order."""
    table = read_results(root, ["schedule", "pruning"], option)
    return list(dict.fromkeys(zip(table.column("schedule").to_pylist(), table.column("pruning").to_pylist())))


def _pick_reference_name(names: Sequence[str], requested: str | None, option: str, kind: str) -> str:
    """The requested name, the only one, or the one named like the untouched baseline
    (`kind`: what is picked, a schedule or a pruning)."""
    names = list(dict.fromkeys(names))
    if requested is not None:
        if requested not in names:
            raise UserError(f"{option} {requested}: no such {kind} (have {', '.join(names)})")
        return requested
    if len(names) == 1:
        return names[0]
    for name in REFERENCE_SCHEDULE_NAMES:
        if name in names:
            return name
    untouched = "all-recompute" if kind == "schedule" else "unpruned"
    raise UserError(f"{option}: cannot tell which of {', '.join(names)} is the {untouched} reference; name it")


def pick_reference(settings: Sequence[tuple[str, str]], schedule: str | None = None,
                   pruning: str | None = None) -> tuple[str, str]:
    """The reference (schedule, pruning): the schedule first (`--reference-schedule`, else the
    only one or the uncached one), then among that schedule's runs the pruning
    (`--reference-pruning`, else the only one or the unpruned one)."""
    schedule = _pick_reference_name([s for s, _ in settings], schedule, "--reference-schedule", "schedule")
    pruning = _pick_reference_name([p for s, p in settings if s == schedule], pruning, "--reference-pruning", "pruning")
    return schedule, pruning


class ReferenceImages:
    """Reference images of one run (or folder of runs) and setting, by (model, prompt_id, seed).

    When the reference holds one model, the model is not compared (a reference run may name
    the same model differently); with several, each image is matched within its own model.
    Holds only the paths (a few strings per image); images load when asked for.
    """

    def __init__(self, run_dir: Path, schedule: str | None = None, option: str = "--reference",
                 pruning: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.schedule, self.pruning = pick_reference(settings_of(self.run_dir, option), schedule, pruning)
        table = read_results(self.run_dir, ["prompt_id", "seed", "image_path", "schedule", "pruning", "seconds_per_image", "model"],
                             option)
        table = table.filter(pc.and_(pc.equal(table.column("schedule"), self.schedule),
                                     pc.equal(table.column("pruning"), self.pruning)))
        models = table.column("model").to_pylist()
        self.single_model = len(set(models)) <= 1
        self.paths = {
            self._key(model, pid, seed): path
            for model, pid, seed, path in zip(
                models,
                table.column("prompt_id").to_pylist(),
                table.column("seed").to_pylist(),
                table.column("image_path").to_pylist(),
            )
        }
        self.seconds_per_image = _mean(table, "seconds_per_image")

    def _key(self, model, prompt_id, seed) -> tuple:
        return (None if self.single_model else str(model), str(prompt_id), int(seed))

    def image(self, prompt_id: str, seed: int, model: str | None = None) -> np.ndarray | None:
        """The reference image for this prompt and seed (and model), or None when there is none."""
        path = self.paths.get(self._key(model, prompt_id, seed))
        return None if path is None else load_rgb(resolve_image(self.run_dir, path))


def _mean(table: pa.Table, column: str) -> float | None:
    if column not in table.column_names or table.num_rows == 0:
        return None
    value = pc.mean(table.column(column)).as_py()
    return None if value is None else float(value)
