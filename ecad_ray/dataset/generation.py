"""What `ecad-ray dataset generate` makes, decided before any model runs: tasks, images, names.

A dataset is a class set (`classes.py`), a prompt file in nameonly's layout and one or more
models with shares. Every image is a row fixed by the plan alone: image k of class c is made by
the model whose share covers k, from prompt k mod (prompts of c), with seed start_seed + k, and
is written to `<output>/<class folder>/<k:06d>.<format>`. So an image depends on its row and
never on which worker, process or attempt made it, and a task (class x model x chunk of k) can be
re-run anywhere. The ledger (`ledger.py`) records which tasks are done; the images themselves
(atomic writes) say which of a task's images exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ecad_ray.atomic import atomic_path, write_table_atomic
from ecad_ray.dataset.classes import ClassSet, load_class_set
from ecad_ray.dataset.ledger import TaskSpec
from ecad_ray.errors import UserError

DATASET_TABLE = "dataset.parquet"
FORMATS = ("jpg", "png")
DEFAULT_SIZE = 224  # nameonly's images are 224 x 224 JPEGs
DATASET_SCHEMA = pa.schema(
    [
        ("class", pa.string()),
        ("prompt_index", pa.int64()),  # position in the class's prompts (metaprompt by metaprompt)
        ("prompt", pa.string()),
        ("model", pa.string()),
        ("seed", pa.int64()),
        ("schedule", pa.string()),  # ECAD caching schedule name; "none" uncached
        ("path", pa.string()),  # relative to the output folder
    ]
)


@dataclass(frozen=True)
class DatasetConfig:
    """Everything `dataset generate` was asked for; the image-deciding part lands in the ledger."""

    output_dir: str
    prompts: str  # prompt JSON in nameonly's layout
    models: tuple[str, ...] = ("demo",)
    dataset: str | None = None  # a shipped class set; exclusive with classes_file
    classes_file: str | None = None
    class_range: str | None = None
    images_per_class: int | None = None
    increase_ratio: float | None = None
    model_share: tuple[float, ...] | None = None  # one per model; None: equal shares
    schedule: str | None = None  # an ECAD caching schedule applied to every model
    steps: int | None = None  # None: the model's (or the schedule's)
    format: str = "jpg"
    size: int = DEFAULT_SIZE
    num_workers: int = 1  # generation actors at most
    min_workers: int | None = None  # the pool's minimum; None: num_workers
    batch_size: int = 4
    start_seed: int = 0
    chunk_size: int = 50  # images per task
    threads_per_worker: int = 1
    address: str | None = None
    device: str = "auto"
    lease_seconds: float = 60.0

    def check(self) -> None:
        """Reject bad counts and choices with the option's name, before anything is read or written."""
        for option, value in (("--size", self.size), ("--batch-size", self.batch_size),
                              ("--num-workers", self.num_workers), ("--chunk-size", self.chunk_size),
                              ("--threads-per-worker", self.threads_per_worker), ("--steps", self.steps)):
            if value is not None and value <= 0:
                raise UserError(f"{option} {value}: must be a positive integer")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.num_workers:
            raise UserError(f"--min-workers {self.min_workers}: must be between 1 and --num-workers ({self.num_workers})")
        if self.format not in FORMATS:
            raise UserError(f"--format {self.format!r}: must be one of {', '.join(FORMATS)}")
        if self.lease_seconds <= 0:
            raise UserError(f"--lease-seconds {self.lease_seconds}: must be positive")
        if not self.models:
            raise UserError("--model: give at least one model")
        if len(set(self.models)) != len(self.models):
            raise UserError(f"--model: a model is named twice ({', '.join(self.models)})")
        if self.model_share is not None:
            if len(self.model_share) != len(self.models):
                raise UserError(f"--model-share {','.join(map(str, self.model_share))}: needs one share per --model "
                                f"({len(self.models)})")
            if any(s < 0 for s in self.model_share) or sum(self.model_share) <= 0:
                raise UserError("--model-share: shares must be non-negative and not all zero")


@dataclass(frozen=True)
class DatasetRow:
    """One image of the dataset as the plan fixes it."""

    class_name: str
    prompt_index: int
    prompt: str
    model: str
    seed: int
    path: str  # relative to the output folder

    @property
    def prompt_id(self) -> str:
        """The prompt's id in the embeddings store: a hash of its text (the same text, one embedding)."""
        return prompt_id(self.prompt)


@dataclass
class DatasetPlan:
    """A checked dataset: its classes and targets, each class's prompts, and the tasks."""

    config: DatasetConfig
    class_set: ClassSet
    targets: dict[str, int]  # images per class
    prompts: dict[str, list[str]]  # class -> its prompts, in file order
    folders: dict[str, str]  # class -> folder name
    tasks: list[TaskSpec]
    schedule_name: str = "none"
    meta: dict = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir).expanduser()

    def rows(self, task: TaskSpec) -> list[DatasetRow]:
        """The images of one task, in order."""
        prompts = self.prompts[task.class_name]
        folder = self.folders[task.class_name]
        return [DatasetRow(task.class_name, k % len(prompts), prompts[k % len(prompts)], task.model,
                           self.config.start_seed + k, f"{folder}/{k:06d}.{self.config.format}")
                for k in range(task.first, task.first + task.count)]

    def missing_rows(self, task: TaskSpec) -> list[DatasetRow]:
        """The images of `task` not yet on disk (writes are atomic: a file there is whole)."""
        return [r for r in self.rows(task) if not (self.output_dir / r.path).is_file()]


def prompt_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_class_prompts(path: str | Path, classes: tuple[str, ...]) -> dict[str, list[str]]:
    """Each class's prompts from a prompt file (nameonly's layout, read and checked by
    `prompts.read_prompt_file`), in file order. Classes of the set that the file lacks are named
    in one line; extra classes are fine."""
    from ecad_ray.dataset.prompts import prompt_texts, read_prompt_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prompts {path}: no such file")
    try:
        data = read_prompt_file(path)
    except UserError as err:
        raise UserError(f"--prompts {err}") from None
    out: dict[str, list[str]] = {}
    for name in classes:
        texts = [t.replace("[concept]", name) for t in prompt_texts(data.get(name, {"metaprompts": []})) if t.strip()]
        if texts:
            out[name] = texts
    missing = [c for c in classes if c not in out]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise UserError(f"--prompts {path}: no prompts for {len(missing)} of {len(classes)} classes: {shown}")
    return out


def class_folder(name: str) -> str:
    """A class's folder name: its name with anything but letters, digits, `.`, `-`, `_` as `_`."""
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
    return folder


def split_by_share(n: int, shares: list[float]) -> list[int]:
    """`n` images split over models in proportion to `shares` (largest remainder; sums to n)."""
    total = sum(shares)
    exact = [n * s / total for s in shares]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan_dataset(config: DatasetConfig, schedule_name: str = "none") -> DatasetPlan:
    """Check everything about the dataset that needs no model, and list its tasks; raises `UserError`.

    Nothing is written here. `schedule_name`: the checked schedule's name (the models are
    resolved by the caller, which knows how to load them)."""
    config.check()
    class_set = load_class_set(config.dataset, config.classes_file).select(config.class_range)
    targets = class_set.images_per_class(increase_ratio=config.increase_ratio, images_per_class=config.images_per_class)
    prompts = read_class_prompts(config.prompts, class_set.classes)
    folders = {c: class_folder(c) for c in class_set.classes}
    clashes = sorted({f for f in folders.values() if list(folders.values()).count(f) > 1})
    if clashes:
        raise UserError(f"classes {', '.join(c for c in folders if folders[c] in clashes)}: their folder names clash "
                        f"({', '.join(clashes)})")
    shares = list(config.model_share or [1.0] * len(config.models))
    tasks = []
    for ci, name in enumerate(class_set.classes):
        first = 0
        for mi, (model, count) in enumerate(zip(config.models, split_by_share(targets[name], shares))):
            for chunk, start in enumerate(range(first, first + count, config.chunk_size)):
                n = min(config.chunk_size, first + count - start)
                tasks.append(TaskSpec(f"{ci:05d}-{mi:02d}-{chunk:05d}", name, model, chunk, start, n))
            first += count
    meta = {
        "class_set": class_set.name,
        "classes": list(class_set.classes),
        "targets": targets,
        "prompts_sha1": hashlib.sha1(json.dumps(prompts, sort_keys=True).encode()).hexdigest(),
        "prompts_file": Path(config.prompts).name,
        "models": list(config.models),
        "model_share": shares,
        "schedule": schedule_name,
        "steps": config.steps,
        "format": config.format,
        "size": config.size,
        "start_seed": config.start_seed,
        "chunk_size": config.chunk_size,
    }
    return DatasetPlan(config, class_set, targets, prompts, folders, tasks, schedule_name, meta)


def write_image(image_HW3: np.ndarray, path: Path, size: int, fmt: str) -> None:
    """Save one image atomically at `size` x `size` (bicubic), as JPEG (quality 95) or PNG."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image_HW3, dtype=np.uint8))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG" if fmt == "jpg" else "PNG", **({"quality": 95} if fmt == "jpg" else {}))


def write_dataset_table(plan: DatasetPlan) -> Path:
    """OUT/dataset.parquet: one row per image on disk, in task order (atomic; any process may
    write it, the content depends on the plan and the files alone)."""
    rows = [r for t in plan.tasks for r in plan.rows(t) if (plan.output_dir / r.path).is_file()]
    columns = {
        "class": [r.class_name for r in rows],
        "prompt_index": [r.prompt_index for r in rows],
        "prompt": [r.prompt for r in rows],
        "model": [r.model for r in rows],
        "seed": [r.seed for r in rows],
        "schedule": [plan.schedule_name] * len(rows),
        "path": [r.path for r in rows],
    }
    return write_table_atomic(pa.table(columns, schema=DATASET_SCHEMA), plan.output_dir / DATASET_TABLE)


def config_dict(config: DatasetConfig) -> dict:
    """Plain JSON-able dict of the config."""
    return asdict(config)
