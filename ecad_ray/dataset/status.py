"""`ecad-ray dataset status OUT`: how far a dataset is, per class, from its ledger and its files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.dataset.generation import class_folder
from ecad_ray.dataset.ledger import TaskState, open_ledger


@dataclass(frozen=True)
class ClassProgress:
    """One class: images on disk vs its target, and its tasks by state."""

    class_name: str
    images: int
    target: int
    tasks: dict[str, int]  # state -> count


def count_images(output_dir: str | Path, class_name: str, fmt: str) -> int:
    """Complete images of a class on disk (hidden `.tmp` leftovers of atomic writes do not count)."""
    folder = Path(output_dir) / class_folder(class_name)
    return sum(1 for p in folder.glob(f"*.{fmt}") if not p.name.startswith(".")) if folder.is_dir() else 0


def class_progress(output_dir: str | Path) -> tuple[list[ClassProgress], list[TaskState]]:
    """Per-class progress and every task, read from the folder's ledger and files."""
    ledger = open_ledger(output_dir)
    try:
        meta, tasks = ledger.meta(), ledger.tasks()
    finally:
        ledger.close()
    by_class: dict[str, dict[str, int]] = {c: {} for c in meta["classes"]}
    for t in tasks:
        by_class[t.spec.class_name][t.state] = by_class[t.spec.class_name].get(t.state, 0) + 1
    rows = [ClassProgress(c, count_images(output_dir, c, meta["format"]), meta["targets"][c], by_class[c])
            for c in meta["classes"]]
    return rows, tasks


def status_lines(output_dir: str | Path) -> list[str]:
    """What `dataset status` prints: a line per class, then running and failed tasks."""
    rows, tasks = class_progress(output_dir)
    width = max(len(r.class_name) for r in rows)
    lines = []
    for r in rows:
        states = ", ".join(f"{n} {s}" for s, n in sorted(r.tasks.items()))
        lines.append(f"{r.class_name:<{width}}  {r.images}/{r.target} images  tasks: {states}")
    images, target = sum(r.images for r in rows), sum(r.target for r in rows)
    done = sum(1 for t in tasks if t.state == "done")
    lines.append(f"total: {images}/{target} images, {done}/{len(tasks)} tasks done")
    now = time.time()
    for t in tasks:
        if t.state == "running":
            expiry = (t.lease_until or 0) - now
            lease = f"lease expires in {expiry:.0f} s" if expiry > 0 else f"lease expired {-expiry:.0f} s ago (will be taken again)"
            lines.append(f"running: task {t.spec.task_id} ({t.spec.class_name}, {t.spec.model}, images "
                         f"{t.spec.first}..{t.spec.first + t.spec.count - 1}) by {t.worker}, {lease}")
    for t in tasks:
        if t.state == "failed":
            lines.append(f"failed: task {t.spec.task_id} ({t.spec.class_name}, {t.spec.model}) by {t.worker}: {t.error}")
    return lines
