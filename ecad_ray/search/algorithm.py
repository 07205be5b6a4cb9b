"""NSGA-II as ECAD runs it (pymoo, ask/tell), and its state in a file without pickle.

ECAD's set-up: population 72, 4-point crossover with probability 0.9, bit-flip mutation
(0.05 per bit is ECAD's `prob`; pymoo scales it per variable), two objectives minimised
(1 − quality, MACs; a third, fidelity to the uncached images, with `--fidelity`: the number of
objectives is the number of columns of `F`) and one inequality constraint: at least one bit differs from the
all-recompute schedule (`G = 1 − reused bits ≤ 0`). No termination: the driver asks and tells
one generation at a time, so it can write each one and stop or resume between any two.

The state after each generation is the survivor population (genomes, objectives, constraint,
NSGA-II's rank and crowding) and the random generator's state, in an `.npz` of plain arrays
(loaded with `allow_pickle=False`). Restoring it gives the same offspring an uninterrupted run
would have asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecad_ray.atomic import atomic_path


@dataclass(frozen=True)
class NsgaSettings:
    """ECAD's operators by default."""

    population: int = 72
    crossover_prob: float = 0.9
    crossover_points: int = 4
    mutation_prob: float = 0.05
    seed: int = 0


def constraint(genomes: np.ndarray) -> np.ndarray:
    """ECAD's constraint per genome (≤ 0 is feasible): at least one sub-layer call reused."""
    return (1.0 - (~np.asarray(genomes, dtype=bool)).sum(axis=1, keepdims=True)).astype(float)


def _problem(n_var: int, n_obj: int):
    from pymoo.core.problem import Problem

    return Problem(n_var=n_var, n_obj=n_obj, n_ieq_constr=1, xl=0, xu=1, vtype=bool)


def _algorithm(settings: NsgaSettings, seeds):
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.pntx import PointCrossover
    from pymoo.operators.mutation.bitflip import BitflipMutation

    return NSGA2(pop_size=settings.population, sampling=seeds,
                 crossover=PointCrossover(prob=settings.crossover_prob, n_points=settings.crossover_points),
                 mutation=BitflipMutation(prob=settings.mutation_prob), eliminate_duplicates=True)


class Search:
    """NSGA-II over genomes of `n_var` bits, told one scored generation at a time."""

    def __init__(self, n_var: int, settings: NsgaSettings):
        self.n_var = n_var
        self.settings = settings
        self.algorithm = None

    def start(self, genomes: np.ndarray, F: np.ndarray) -> None:
        """Begin from a scored first generation (seeds, baselines or random genomes)."""
        from pymoo.core.population import Population
        from pymoo.core.termination import NoTermination

        pop = Population.new(X=np.asarray(genomes, dtype=bool), F=np.asarray(F, dtype=float), G=constraint(genomes))
        self.algorithm = _algorithm(self.settings, pop)
        self.algorithm.setup(_problem(self.n_var, pop.get("F").shape[1]), termination=NoTermination(), seed=self.settings.seed)
        first = self.algorithm.ask()  # the seeds themselves, already scored: nothing is drawn
        self.algorithm.tell(infills=first)

    def ask(self) -> np.ndarray:
        """The next generation's genomes (offspring of the survivors)."""
        return np.asarray(self.algorithm.ask().get("X"), dtype=bool)

    def tell(self, genomes: np.ndarray, F: np.ndarray) -> None:
        """Score the asked generation; NSGA-II keeps the best `population` of survivors and offspring."""
        from pymoo.core.population import Population

        off = Population.new(X=np.asarray(genomes, dtype=bool), F=np.asarray(F, dtype=float), G=constraint(genomes))
        self.algorithm.tell(infills=off)

    def survivors(self) -> dict[str, np.ndarray]:
        pop = self.algorithm.pop
        return {k: np.asarray(pop.get(k)) for k in ("X", "F", "G", "rank", "crowding")}

    def rng_state(self) -> str:
        return json.dumps(self.algorithm.random_state.bit_generator.state)

    def set_rng_state(self, text: str) -> None:
        self.algorithm.random_state.bit_generator.state = json.loads(text)

    # ---- state on disk -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Survivors and random state in one `.npz` (atomic)."""
        arrays = self.survivors()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays, rng=np.array(self.rng_state()))

    @classmethod
    def restore(cls, path: Path, n_var: int, settings: NsgaSettings) -> "Search":
        """The search as it stood when `save` wrote `path`."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        search = cls(n_var, settings)
        search.start(arrays["X"], arrays["F"])
        from pymoo.core.population import Population

        restored = Population.new(X=arrays["X"].astype(bool), F=arrays["F"], G=arrays["G"])
        restored.set("rank", arrays["rank"])
        restored.set("crowding", arrays["crowding"])
        search.algorithm.pop = restored  # order, rank and crowding as saved: mating picks by index
        search.set_rng_state(str(arrays["rng"]))
        return search


def pareto_front(F: np.ndarray, feasible: np.ndarray | None = None) -> np.ndarray:
    """Indices of the non-dominated rows of `F` (minimised), among the feasible ones."""
    F = np.asarray(F, dtype=float)
    keep = np.ones(len(F), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    idx = [i for i in range(len(F)) if keep[i]]
    front = []
    for i in idx:
        dominated = any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in idx if j != i)
        if not dominated:
            front.append(i)
    return np.array(front, dtype=int)
