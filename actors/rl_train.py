"""`var rl train` on Ray: N rollout actors generate episodes in parallel, the driver learns.

Each `RolloutActor` loads the generator once and keeps the unpruned references of the tasks it
is given. An update's tasks are shared out evenly (an update waits for its slowest actor, so
an uneven split is lost throughput), preferring an actor that already holds a task's
reference, so most references are generated once. Per update the driver sends the current weights (a few KB) and
each actor its share of the update's tasks; the learner step runs in the driver
(`ecad_ray.var.rl.training.train` owns the loop, checkpoints and resume).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import ray
import torch

from actors.plan import ray_session
from ecad_ray.var.rl.trainer import RolloutFn, Task, TrainConfig, make_policy_config
from ecad_ray.var.rl.training import train


@ray.remote
class RolloutActor:
    """One generator + policy copy; `run` rolls out groups (see `trainer.Rollouts.run`)."""

    def __init__(self, model: str, config: dict[str, Any], threads: int = 1):
        from ecad_ray.var.checkpoints import load_var_model
        from ecad_ray.var.rl.trainer import Rollouts

        torch.set_num_threads(threads)
        pipe = load_var_model(model)
        cfg = TrainConfig(**{**config, "budgets": tuple(config["budgets"])})
        self.rollouts = Rollouts(pipe, make_policy_config(pipe, cfg), cfg.reward)

    def run(self, weights, tasks, group_size, sample_seeds):
        """Groups of this actor's tasks."""
        return self.rollouts.run(weights, tasks, group_size, sample_seeds)


def ray_rollout(actors: list, group_size: int) -> RolloutFn:
    """Rollout function over `actors`: tasks split evenly, all actors run in parallel."""
    holders: dict[tuple[int, str, int], set[int]] = {}  # which actors hold a task's reference

    def rollout(weights: dict[str, torch.Tensor], tasks: list[Task], sample_seed: int) -> list[dict[str, Any]]:
        ref = ray.put(weights)
        shares = assign_tasks(tasks, len(actors), holders)
        futures = [(idx, a.run.remote(ref, [tasks[i] for i in idx], group_size, [sample_seed * 1000 + i for i in idx]))
                   for a, idx in zip(actors, shares) if idx]
        out: list[dict[str, Any]] = [{}] * len(tasks)
        for idx, fut in futures:
            for i, group in zip(idx, ray.get(fut)):
                out[i] = group
        return out

    return rollout


def assign_tasks(tasks: list[Task], num_actors: int, holders: dict[tuple[int, str, int], set[int]]) -> list[list[int]]:
    """Task indices per actor: at most ceil(tasks / actors) each, an actor holding the task's
    reference first; `holders` is updated with where each reference will now be."""
    cap = math.ceil(len(tasks) / num_actors)
    shares: list[list[int]] = [[] for _ in range(num_actors)]
    for i, t in enumerate(tasks):
        key = (t.class_label, t.prompt, t.seed)
        have = holders.setdefault(key, set())
        room = [a for a in sorted(have) if len(shares[a]) < cap]
        a = room[0] if room else min(range(num_actors), key=lambda j: (len(shares[j]), j))
        shares[a].append(i)
        have.add(a)
    return shares


def run_rl_train(pipe, config: TrainConfig, output_dir: str | Path, num_workers: int = 1,
                 address: str | None = None, resume: bool = False, threads: int = 1,
                 on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Start (or join) Ray, start `num_workers` rollout actors, train; returns policy.json."""
    with ray_session(address, num_cpus=max(2, num_workers * threads)):
        actors = [RolloutActor.options(num_cpus=threads).remote(config.model, config.to_dict(), threads)
                  for _ in range(num_workers)]
        try:
            rollout = ray_rollout(actors, config.group_size)
            return train(pipe, config, output_dir, rollout, resume, on_update)
        finally:
            for a in actors:
                ray.kill(a)
