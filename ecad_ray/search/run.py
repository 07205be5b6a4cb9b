"""`ecad-ray search`: evolve caching schedules generation by generation, resumable at any point.

    gen_000 = seeds (ECAD folder, `schedule make` baselines) + random genomes, scored
    for each further generation: NSGA-II asks offspring -> their files are written (unscored)
      -> every genome not scored before is evaluated (on the Ray pool) -> files get `metrics`
      -> NSGA-II is told -> its state is saved (`gen_NNN/algorithm.npz`) -> `front/` rewritten

Resume (`--resume`) starts from the last saved state. An interrupted generation's candidate
files are already on disk, so it continues that generation with the same genomes and the same
random state: nothing is asked twice and no genome scored before (in any generation, read back
from the files) is evaluated again. Evaluation goes through an `Evaluator` (the Ray pool in
`actors/search.py`, or a plain in-process one) so this loop knows nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ecad_ray.caching.macs import schedule_mac_report
from ecad_ray.caching.schedule import Schedule, save_schedule
from ecad_ray.caching.spec import TransformerSpec, resolve_spec
from ecad_ray.errors import UserError
from ecad_ray.search.algorithm import NsgaSettings, Search, pareto_front
from ecad_ray.search.evaluator import EvalJob
from ecad_ray.search.genome import GenomeLayout, genome_key
from ecad_ray.search.objectives import check_fidelity, check_objective, objective_values
from ecad_ray.search.population import (
    baseline_population,
    candidate_path,
    generation_dir,
    generations,
    load_population,
    random_population,
    read_generation,
    search_scores,
    write_candidate,
    write_json,
)

SEARCH_FILE = "search.json"  # what the search is (model, prompts, objective, operators): fixed on resume
REFERENCE_FILE = "reference.npz"  # the uncached images every fidelity score compares against
STATE_FILE = "algorithm.npz"
ASK_FILE = "ask.json"  # the random state right after a generation was asked (resume mid-generation)
FRONT_DIR = "front"


@dataclass(frozen=True)
class SearchConfig:
    model: str
    job: EvalJob
    output_dir: str
    objective: str = "judge"
    fidelity: str = ""  # '' or psnr / ssim: fidelity to the uncached images as one more objective
    generations: int = 10  # evolved after the seed generation gen_000
    nsga: NsgaSettings = field(default_factory=NsgaSettings)
    init_population: str | None = None  # an ECAD population / schedule folder; None: baselines
    steps: int | None = None  # denoising steps (None: the model's)
    guidance_scale: float | None = None  # None: the model's
    resume: bool = False
    num_workers: int = 1
    threads_per_worker: int = 1
    address: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    lpips_random_backbone: bool = False

    def identity(self) -> dict:
        """What a resumed search must share with the one on disk."""
        identity = {"model": self.model, "objective": self.objective, "steps": self.steps,
                    "job": dataclasses.asdict(self.job), "nsga": dataclasses.asdict(self.nsga)}
        if self.fidelity:  # only when set: searches saved before --fidelity existed still resume
            identity["fidelity"] = self.fidelity
        return identity


class Evaluator(Protocol):
    """Where candidates are scored: `reference()` once, then `evaluate` per generation."""

    def reference(self) -> np.ndarray: ...
    def open(self, reference: np.ndarray) -> None: ...
    def evaluate(self, items: list[tuple[str, Schedule]]) -> Iterator[tuple[str, dict]]: ...
    def close(self) -> None: ...


@dataclass
class Progress:
    generation: int
    generations: int
    done: int
    total: int
    evaluated: int  # candidates evaluated in this process (scores read back from files not counted)
    front: list[dict]


def search_layout(config: SearchConfig) -> GenomeLayout:
    spec: TransformerSpec = resolve_spec(config.model)
    from ecad_ray.models.registry import resolve_model

    steps = config.steps or resolve_model(config.model).steps
    return GenomeLayout(spec, steps)


def worker_args(config: SearchConfig) -> dict:
    """Constructor arguments of a `CandidateEvaluator` for this search (all but `reference`)."""
    from ecad_ray.config import ImageSettings
    from ecad_ray.models.registry import resolve_model

    model_spec = resolve_model(config.model)
    layout = search_layout(config)
    settings = ImageSettings(model=model_spec.name, height=layout.spec.height, width=layout.spec.width,
                             steps=layout.steps,
                             guidance_scale=model_spec.guidance_scale if config.guidance_scale is None else config.guidance_scale,
                             negative_prompt=config.job.negative_prompt, schedule="search")
    return dict(model_spec=model_spec, settings=settings, job=config.job, objective=config.objective,
                device=config.device, dtype=config.dtype, lpips_random_backbone=config.lpips_random_backbone)


class InProcessEvaluator:
    """Every candidate scored in this process, one after another (tests; no Ray)."""

    def __init__(self, config: SearchConfig):
        self.args = worker_args(config)
        self.worker = None

    def _worker(self):
        from ecad_ray.search.evaluator import CandidateEvaluator

        if self.worker is None:
            self.worker = CandidateEvaluator(**self.args)
        return self.worker

    def reference(self) -> np.ndarray:
        return self._worker().images(None)[0]

    def open(self, reference: np.ndarray) -> None:
        self._worker().reference = reference

    def evaluate(self, items):
        for key, schedule in items:
            yield key, self._worker().evaluate(schedule)

    def close(self) -> None:
        pass


def run_search(config: SearchConfig, evaluator: Evaluator, progress: Callable[[Progress], None] | None = None) -> list[dict]:
    """Run (or resume) the search in `config.output_dir`; returns the final front (see `front_rows`)."""
    check_objective(config.objective)
    check_fidelity(config.fidelity, config.objective)
    out = Path(config.output_dir)
    layout = search_layout(config)
    _start_folder(out, config)
    archive = _scored_genomes(out)
    ref_path = out / REFERENCE_FILE
    if ref_path.is_file():
        with np.load(ref_path, allow_pickle=False) as data:
            reference = data["images"]
    else:
        reference = evaluator.reference()
        _save_npz(ref_path, images=reference)
    evaluator.open(reference)
    state = _Loop(config, layout, evaluator, archive, progress)
    try:
        saved = [g for g in generations(out) if (generation_dir(out, g) / STATE_FILE).is_file()]
        if saved:
            search = Search.restore(generation_dir(out, saved[-1]) / STATE_FILE, layout.size, config.nsga)
            first = saved[-1] + 1
        else:
            genomes, sources = _generation_genomes(out, 0) or _seeds(config, layout)
            F = state.evaluate(0, genomes, sources)
            search = Search(layout.size, config.nsga)
            search.start(genomes, F)
            state.finish(0, search)
            first = 1
        for gen in range(first, config.generations + 1):
            found = _generation_genomes(out, gen)
            if found:
                genomes, sources = found
                search.set_rng_state(json.loads((generation_dir(out, gen) / ASK_FILE).read_text())["rng"])
            else:
                genomes = search.ask()
                sources = ["offspring"] * len(genomes)
                state.write_unscored(gen, genomes, sources)
                write_json(generation_dir(out, gen) / ASK_FILE, {"rng": search.rng_state()})
            F = state.evaluate(gen, genomes, sources)
            search.tell(genomes, F)
            state.finish(gen, search)
    finally:
        evaluator.close()
    return front_rows(out)


def _start_folder(out: Path, config: SearchConfig) -> None:
    """A new search writes search.json; a resumed one must match it; a used folder needs --resume."""
    path = out / SEARCH_FILE
    if path.is_file():
        if not config.resume:
            raise UserError(f"--output-dir {out}: holds a search already; pass --resume to continue it")
        saved = json.loads(path.read_text())
        mine = json.loads(json.dumps(config.identity()))
        for key in mine:
            if saved.get(key) != mine[key]:
                raise UserError(f"--resume {out}: the search there has a different {key} "
                                f"({json.dumps(saved.get(key))[:80]}); start a new --output-dir")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, config.identity())


def _seeds(config: SearchConfig, layout: GenomeLayout) -> tuple[np.ndarray, list[str]]:
    """gen_000: the seed folder (or the baselines), topped up with random genomes to the population."""
    if config.init_population:
        genomes, names = load_population(config.init_population, layout)
    else:
        genomes, names = baseline_population(layout)
    n = config.nsga.population
    genomes, names = genomes[:n], names[:n]
    rng = np.random.default_rng(config.nsga.seed)
    extra = random_population(layout, n - len(genomes), rng)
    return np.concatenate([genomes, extra]), names + ["random"] * len(extra)


def _generation_genomes(out: Path, gen: int) -> tuple[np.ndarray, list[str]] | None:
    """The genomes of a generation whose files are on disk (an interrupted one), or None."""
    found = read_generation(out, gen)
    if not found:
        return None
    return (np.stack([_bits(s) for _, s in found]),
            [s.attributes.get("source", "offspring") for _, s in found])


def _bits(schedule: Schedule) -> np.ndarray:
    steps = range(schedule.num_inference_steps)
    return np.array([bool(v) for s in steps for entry in schedule.steps[f"{s:03d}"].values()
                     for k, v in entry.items() if not k.startswith("custom_compute")], dtype=bool)


def _scored_genomes(out: Path) -> dict[str, dict]:
    """genome key -> scores of every candidate already scored in this folder."""
    archive: dict[str, dict] = {}
    for gen in generations(out):
        for _, schedule in read_generation(out, gen):
            scores = search_scores(schedule)
            if scores is not None:
                archive[genome_key(_bits(schedule))] = scores
    return archive


class _Loop:
    """Scoring and writing of one generation at a time."""

    def __init__(self, config, layout, evaluator, archive, progress):
        self.config, self.layout, self.evaluator, self.archive, self.progress = config, layout, evaluator, archive, progress
        self.out = Path(config.output_dir)
        self.evaluated = 0
        self.front = front_rows(self.out)

    def schedule(self, gen: int, index: int, bits: np.ndarray, source: str) -> Schedule:
        return self.layout.to_schedule(bits, f"gen_{gen:03d}_cand_{index:03d}",
                                       {"generation": gen, "candidate": index, "source": source})

    def write_unscored(self, gen: int, genomes: np.ndarray, sources: list[str]) -> None:
        for i, (bits, source) in enumerate(zip(genomes, sources)):
            write_candidate(self.out, gen, i, self.schedule(gen, i, bits, source))

    def evaluate(self, gen: int, genomes: np.ndarray, sources: list[str]) -> np.ndarray:
        """Score a generation (only genomes never scored before), writing each file as it lands."""
        n = len(genomes)
        keys = [genome_key(g) for g in genomes]
        schedules = [self.schedule(gen, i, genomes[i], sources[i]) for i in range(n)]
        pending: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in self.archive:
                self._write(gen, i, schedules[i], self.archive[key])
            else:
                pending.setdefault(key, []).append(i)
        done = n - sum(len(v) for v in pending.values())
        self._report(gen, done, n)
        items = [(keys[idx[0]], schedules[idx[0]]) for idx in pending.values()]
        for key, scores in self.evaluator.evaluate(items):
            scores = {"objective": self.config.objective, **scores,
                      "macs_ratio": schedule_mac_report(schedules[pending[key][0]], self.layout.spec).ratio}
            self.archive[key] = scores
            self.evaluated += 1
            for i in pending[key]:
                self._write(gen, i, schedules[i], scores)
                done += 1
            self._report(gen, done, n)
        return np.array([objective_values(self.archive[k], self.config.fidelity) for k in keys])

    def _write(self, gen: int, index: int, schedule: Schedule, scores: dict) -> None:
        report = schedule_mac_report(schedule, self.layout.spec)
        metrics = {**report.as_metrics(), "search": scores}
        write_candidate(self.out, gen, index, dataclasses.replace(schedule, metrics=metrics))

    def finish(self, gen: int, search: Search) -> None:
        search.save(generation_dir(self.out, gen) / STATE_FILE)
        write_front(self.out)
        self.front = front_rows(self.out)
        n = len(read_generation(self.out, gen))
        self._report(gen, n, n)

    def _report(self, gen: int, done: int, total: int) -> None:
        if self.progress:
            self.progress(Progress(gen, self.config.generations, done, total, self.evaluated, self.front))


def scored_candidates(out: Path) -> list[tuple[Path, Schedule, dict]]:
    """(file, schedule, scores) of every scored candidate, each genome once (its first file)."""
    seen, rows = set(), []
    for gen in generations(out):
        for index, schedule in read_generation(out, gen):
            scores = search_scores(schedule)
            key = genome_key(_bits(schedule))
            if scores is not None and key not in seen:
                seen.add(key)
                rows.append((candidate_path(out, gen, index), schedule, scores))
    return rows


def front_rows(out: str | Path) -> list[dict]:
    """The Pareto front (loss, [fidelity loss,] MAC ratio) of every feasible candidate scored so far, fastest first."""
    out = Path(out)
    rows = scored_candidates(out)
    if not rows:
        return []
    fidelity = json.loads((out / SEARCH_FILE).read_text()).get("fidelity", "") if (out / SEARCH_FILE).is_file() else ""
    F = np.array([objective_values(s, fidelity) for _, _, s in rows])
    feasible = np.array([s["macs_ratio"] < 1.0 or not _all_recompute(sch) for _, sch, s in rows])
    picked = pareto_front(F, feasible)
    front = [{"file": str(rows[i][0].relative_to(out)), "name": rows[i][1].name, **rows[i][2]} for i in picked]
    return sorted(front, key=lambda r: r["macs_ratio"])


def _all_recompute(schedule: Schedule) -> bool:
    return bool(_bits(schedule).all())


def write_front(out: Path) -> None:
    """`front/`: the current front's schedule files (copies), ready for `ecad-ray benchmark`."""
    folder = out / FRONT_DIR
    tmp = out / (FRONT_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for row in front_rows(out):
        shutil.copyfile(out / row["file"], tmp / (row["name"] + ".json"))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _save_npz(path: Path, **arrays) -> None:
    from ecad_ray.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_best(out: str | Path, folder: str | Path) -> list[Path]:
    """Copy the front's schedules into `folder` (e.g. schedules/demo/searched/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in front_rows(out):
        paths.append(save_schedule(_load(Path(out) / row["file"]), folder / f"{row['name']}.json"))
    return paths


def _load(path: Path) -> Schedule:
    from ecad_ray.caching.schedule import load_schedule

    return load_schedule(path)


def search_status(out: str | Path) -> tuple[str, list[dict]]:
    """(`N generations saved, M candidates scored`, the front) of a search folder."""
    out = Path(out)
    if not (out / SEARCH_FILE).is_file():
        raise UserError(f"{out}: not a search folder (no {SEARCH_FILE})")
    saved = [g for g in generations(out) if (generation_dir(out, g) / STATE_FILE).is_file()]
    scored = len(scored_candidates(out))
    last = f"generation {saved[-1]} saved" if saved else "no generation saved yet"
    return f"{last}, {scored} distinct candidates scored", front_rows(out)


def front_table(front: list[dict]) -> str:
    """The front as aligned text: one line per schedule, fewest MACs first."""
    lines = [f"{'schedule':<20} {'MACs':>6} {'quality':>8} {'psnr':>6} {'ssim':>6} {'s/image':>8}"]
    for r in front:
        lines.append(f"{r['name']:<20} {r['macs_ratio']:>5.3f}x {r['quality']:>8.3f} {r.get('psnr', float('nan')):>6.2f} "
                     f"{r.get('ssim', float('nan')):>6.3f} {r['seconds_per_image']:>8.3f}")
    return "\n".join(lines)
