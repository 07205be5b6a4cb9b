"""Populations on disk, in ECAD's layout: read seed populations, write each generation.

    <dir>/gen_000/candidates/cand_000.json ...   # ECAD schedule files; `metrics.search` holds the scores
    <dir>/gen_000/algorithm.npz                  # NSGA-II state after the generation (see algorithm.py)

A seed population (`--init-population`) may be any of: a search folder or ECAD's
`population_initialization/<name>` (its highest `gen_NNN/candidates` is taken: the latest
population), one `gen_NNN` folder, a `candidates` folder, or any folder of schedule JSON files
(`schedule make` baselines, ECAD's `gen_recompute_all_every_n`), searched recursively. PixArt
and FLUX candidates differ only in their blocks; both are checked against the model's shape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ecad_ray.caching.baselines import BaselineParams, make_baseline
from ecad_ray.caching.schedule import Schedule, load_schedule, save_schedule
from ecad_ray.errors import UserError
from ecad_ray.search.genome import GenomeLayout

GEN_RE = re.compile(r"gen_(\d+)$")
CAND_RE = re.compile(r"cand_(\d+)\.json$")


def generation_dir(root: Path, gen: int) -> Path:
    return Path(root) / f"gen_{gen:03d}"


def candidate_path(root: Path, gen: int, index: int) -> Path:
    return generation_dir(root, gen) / "candidates" / f"cand_{index:03d}.json"


def generations(root: Path) -> list[int]:
    """Generation numbers present under `root`, ascending."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := GEN_RE.match(p.name)))


def candidate_files(folder: str | Path) -> list[Path]:
    """The schedule files a seed folder holds, by the rules in the module docstring."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--init-population {folder}: no such folder")
    gens = generations(folder)
    if gens:
        folder = generation_dir(folder, gens[-1])
    if (folder / "candidates").is_dir():
        folder = folder / "candidates"
    files = sorted(folder.rglob("*.json"))
    files = [f for f in files if f.name != "manager_config.json"]
    if not files:
        raise UserError(f"--init-population {folder}: holds no schedule .json files")
    return files


def load_population(folder: str | Path, layout: GenomeLayout) -> tuple[np.ndarray, list[str]]:
    """Genomes (N × bits) and names of every schedule in a seed folder; the first misfit is one line."""
    files = candidate_files(folder)
    genomes = [layout.from_schedule(load_schedule(f), source=str(f)) for f in files]
    return np.stack(genomes), [f.stem for f in files]


def baseline_population(layout: GenomeLayout) -> tuple[np.ndarray, list[str]]:
    """`schedule make` baselines as seeds: FORA every 2..6 steps and every-N per sub-layer (2, 3).

    The hand-made points ECAD compares against, so the first front already holds them.
    """
    spec, steps = layout.spec, layout.steps
    schedules: list[Schedule] = [make_baseline("fora", spec, steps, BaselineParams(interval=n))
                                 for n in range(2, min(6, steps) + 1)]
    components = sorted({c for b in spec.block_names for c in spec.components_of(b)})
    for comp in components:
        for n in (2, 3):
            if n <= steps:
                schedules.append(make_baseline("every", spec, steps, BaselineParams(every={comp: n})))
    genomes = [layout.from_schedule(s) for s in schedules]
    return np.stack(genomes), [s.name for s in schedules]


def random_population(layout: GenomeLayout, n: int, rng: np.random.Generator) -> np.ndarray:
    """ECAD's random sampling: every bit a fair coin."""
    return rng.random((n, layout.size)) < 0.5


def write_candidate(root: Path, gen: int, index: int, schedule: Schedule) -> Path:
    """Write one candidate in ECAD's layout (atomically: a crash never leaves half a file)."""
    path = candidate_path(root, gen, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_schedule(schedule, path)


def read_generation(root: Path, gen: int) -> list[tuple[int, Schedule]]:
    """(index, schedule) of every candidate file of one generation, by index."""
    folder = generation_dir(root, gen) / "candidates"
    found = []
    for path in sorted(folder.glob("cand_*.json")) if folder.is_dir() else []:
        m = CAND_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), load_schedule(path)))
    return sorted(found, key=lambda item: item[0])


def search_scores(schedule: Schedule) -> dict | None:
    """The search's scores stored in a candidate file (`metrics.search`), or None if not evaluated."""
    return (schedule.metrics or {}).get("search")


def write_json(path: Path, data: dict) -> None:
    from ecad_ray.atomic import write_text_atomic

    write_text_atomic(Path(path), json.dumps(data, indent=2) + "\n")
