"""Class sets: which classes a synthetic dataset has and how many images each class gets.

A class set is shipped data (`classsets/<name>.json`: `{"classes": [...], "base_counts": [...]}`),
the demo's `shapes` (colour x shape, so everything runs offline on the demo model), or any text
file with one class name per line (`--classes-file`). nameonly sizes a class as its base count
times an increase ratio (1.15 recommended), so a generated set can be a little larger than the
real one it stands in for; `--images-per-class N` overrides that.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.errors import UserError

CLASSSETS_DIR = Path(__file__).resolve().parent / "classsets"
DEFAULT_INCREASE_RATIO = 1.15


@dataclass(frozen=True)
class ClassSet:
    """A dataset's class names in their canonical order, with nameonly's base counts when known."""

    name: str
    classes: tuple[str, ...]
    base_counts: tuple[int, ...] | None = None

    def select(self, class_range: str | None) -> "ClassSet":
        """The classes START:END (Python slice of the canonical order), as `--class-range` asks."""
        if not class_range:
            return self
        start, end = parse_class_range(class_range, len(self.classes))
        counts = self.base_counts[start:end] if self.base_counts is not None else None
        return ClassSet(self.name, self.classes[start:end], counts)

    def images_per_class(self, *, increase_ratio: float | None = None, images_per_class: int | None = None) -> dict[str, int]:
        """How many images each class gets: N for every class, or ceil(base count x ratio)."""
        if images_per_class is not None:
            if images_per_class < 1:
                raise UserError(f"--images-per-class must be at least 1, got {images_per_class}")
            return {c: images_per_class for c in self.classes}
        ratio = DEFAULT_INCREASE_RATIO if increase_ratio is None else increase_ratio
        if ratio <= 0:
            raise UserError(f"--increase-ratio must be positive, got {ratio}")
        if self.base_counts is None:
            raise UserError(
                f"class set {self.name!r} has no per-class base counts: pass --images-per-class N"
            )
        return {c: math.ceil(n * ratio - 1e-9) for c, n in zip(self.classes, self.base_counts)}


def parse_class_range(text: str, n: int) -> tuple[int, int]:
    """`START:END` (either side may be empty) -> (start, end) within n classes; an empty range is an error."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        end = int(parts[1]) if parts[1].strip() else n
    except ValueError:
        raise UserError(f"--class-range {text!r}: expected START:END, e.g. 0:10") from None
    start, end = max(0, start), min(n, end)
    if start >= end:
        raise UserError(f"--class-range {text!r} selects no class (the set has {n} classes)")
    return start, end


def shapes_class_set() -> ClassSet:
    """The demo's classes: every colour x shape pair ("red circle", ...), no base counts."""
    from ecad_ray.shapes import COLOUR_NAMES, SHAPES

    return ClassSet("shapes", tuple(f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES))


def available_class_sets() -> list[str]:
    """Names `--dataset` accepts: the shipped sets and `shapes`."""
    return sorted(["shapes", *(p.stem for p in CLASSSETS_DIR.glob("*.json"))])


def load_class_set(name: str | None = None, classes_file: str | Path | None = None) -> ClassSet:
    """The class set `--dataset NAME` or `--classes-file FILE` names (exactly one of them)."""
    if (name is None) == (classes_file is None):
        raise UserError("give exactly one of --dataset NAME or --classes-file FILE")
    if classes_file is not None:
        return _read_classes_file(Path(classes_file))
    if name == "shapes":
        return shapes_class_set()
    path = CLASSSETS_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"--dataset {name!r} is not a known class set; known: {', '.join(available_class_sets())}")
    data = json.loads(path.read_text())
    counts = data.get("base_counts")
    return ClassSet(name, tuple(data["classes"]), tuple(counts) if counts is not None else None)


def _read_classes_file(path: Path) -> ClassSet:
    if not path.is_file():
        raise UserError(f"--classes-file {path}: no such file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise UserError(f"--classes-file {path}: holds no class name (one per line)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"--classes-file {path}: class names repeat: {', '.join(dupes)}")
    return ClassSet(path.stem, tuple(names))
