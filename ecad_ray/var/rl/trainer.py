"""GRPO training of the pruning policy against live generation (no Ray here: see actors.rl_train).

An update: the driver picks `groups_per_update` (condition, seed) tasks from a fixed training
pool; for each, a rollout worker generates `group_size` images of that same condition and
seed in one batch, every item sampling its own plan from the current policy; each image is
scored against the cached unpruned image of the task (`reward`). The learner standardises the
rewards within each group (the group mean is the baseline, so no value network) and takes one
policy-gradient step on the log-probabilities of the sampled actions, plus a small entropy
bonus. See docs/rl.md for why this and not PPO.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ecad_ray.errors import UserError
from ecad_ray.var.items import generate_items
from ecad_ray.var.rl.policy import Policy, PolicyConfig, PolicyController
from ecad_ray.var.rl.reward import RewardConfig, fidelity, group_advantages, to_uint8
from ecad_ray.var.rl.state import DEFAULT_ACTIONS, ModelFacts, check_budget, flops_share, parse_actions

TRAIN_SEED_BASE = 1_000_000  # training seeds; evaluation (frontier) uses seeds below this


@dataclass(frozen=True)
class TrainConfig:
    """Everything `var rl train` needs (stored in policy.json; `--resume` checks it)."""

    model: str = "demo-var"
    episodes: int = 2000  # images generated in total (sampled plans)
    group_size: int = 8  # plans per (condition, seed)
    groups_per_update: int = 8
    budgets: tuple[float, ...] = (0.5,)  # hard FLOPs budgets; each group draws one
    flops_cost: float = 0.5
    fidelity: str = "ssim"
    actions: str = DEFAULT_ACTIONS
    min_scale_share: float = 0.05
    seeds_per_condition: int = 16  # size of the training pool: conditions x seeds
    lr: float = 3e-3
    entropy_coef: float = 0.01
    hidden: int = 64
    checkpoint_every: int = 5  # updates
    seed: int = 0

    def __post_init__(self) -> None:
        for b in self.budgets:
            check_budget(b)
        parse_actions(self.actions)
        RewardConfig(self.fidelity, self.flops_cost)
        for name in ("episodes", "group_size", "groups_per_update", "seeds_per_condition", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')}: must be >= 1")
        if self.group_size < 2:
            raise UserError("--group-size: must be >= 2 (advantages are relative to the group)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @property
    def reward(self) -> RewardConfig:
        """How episodes are scored."""
        return RewardConfig(self.fidelity, self.flops_cost)


@dataclass(frozen=True)
class Task:
    """One group: `group_size` plans of one condition and seed under one budget."""

    class_label: int  # -1 for a prompt
    prompt: str
    seed: int
    budget: float


def training_pool(pipe, seeds_per_condition: int) -> list[tuple[int, str, int]]:
    """(class, prompt, seed) of every training task: each condition x its training seeds. A text
    model (a text VAR, Infinity) trains on the shapes demo's training captions: the policy learns
    where pruning hurts the image, which needs varied prompts, not the prompts of one domain."""
    if not pipe.text_conditional:
        conds = [(c, "") for c in range(pipe.config.var.num_classes)]
    else:
        from ecad_ray.shapes import sample_scenes

        conds = [(-1, s.caption) for s in sample_scenes(32, seed=0, split="train")]
    return [(c, p, TRAIN_SEED_BASE + k) for c, p in conds for k in range(seeds_per_condition)]


def pick_tasks(pool: list[tuple[int, str, int]], config: TrainConfig, update: int) -> list[Task]:
    """The tasks of update `update` (a pure function of the config and the update number)."""
    rng = random.Random(config.seed * 1_000_003 + update)
    return [Task(*rng.choice(pool), rng.choice(config.budgets)) for _ in range(config.groups_per_update)]


@dataclass
class Rollouts:
    """A rollout worker's state: the generator, a policy copy, the cached unpruned references."""

    pipe: Any  # VarPipeline or InfinityPipeline
    policy_config: PolicyConfig
    reward: RewardConfig
    references: dict[tuple[int, str, int], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.facts = ModelFacts.of(self.pipe)
        self.policy = Policy(self.policy_config).eval()

    def reference(self, task: Task) -> np.ndarray:
        """The unpruned image of the task's condition and seed, generated once."""
        key = (task.class_label, task.prompt, task.seed)
        if key not in self.references:
            result = self.pipe.generate(self._cond(task, 1), [task.seed])
            self.references[key] = to_uint8(result.images_B3HW)[0]
        return self.references[key]

    def _cond(self, task: Task, n: int) -> torch.Tensor:
        if task.class_label >= 0:
            return self.pipe.conditions(classes=[task.class_label] * n)
        return self.pipe.conditions(prompts=[task.prompt] * n)

    def run(self, weights: dict[str, torch.Tensor], tasks: list[Task], group_size: int,
            sample_seeds: list[int]) -> list[dict[str, Any]]:
        """Roll out each task's group with `weights`, sampling plans from its own seed (so a
        group's plans do not depend on which worker ran it); per group the learner's inputs."""
        self.policy.load_state_dict(weights)
        out = []
        for task, sample_seed in zip(tasks, sample_seeds):
            gen = torch.Generator().manual_seed(sample_seed)
            ref = self.reference(task)
            controller = PolicyController(self.policy_config, self.facts,
                                          lambda f, m: self.policy.act(f, m, sample=True, generator=gen),
                                          task.budget, decisions=[])
            t0 = time.perf_counter()
            result = generate_items(self.pipe, self._cond(task, group_size), [task.seed] * group_size, controller)
            images = to_uint8(result.images_B3HW)
            fids = [fidelity(img, ref, self.reward.metric) for img in images]
            shares = [flops_share(self.facts, r) for r in result.item_ratios]
            rewards = [self.reward.reward(f, s) for f, s in zip(fids, shares)]
            ds = controller.decisions
            out.append({
                "features": torch.cat([d.features for d in ds]).numpy(),
                "masks": torch.cat([d.mask for d in ds]).numpy(),
                "actions": np.array([a for d in ds for a in d.actions], dtype=np.int64),
                "items": np.tile(np.arange(group_size), len(ds)),
                "rewards": np.array(rewards), "fidelity": np.array(fids), "flops_share": np.array(shares),
                "seconds": time.perf_counter() - t0,
            })
        return out


def policy_gradient_loss(policy: Policy, groups: list[dict[str, Any]], entropy_coef: float) -> tuple[torch.Tensor, float]:
    """(loss, mean entropy): -advantage x log-prob over every decision with a real choice."""
    feats = torch.tensor(np.concatenate([g["features"] for g in groups])).float()  # copies: Ray's arrays are read-only
    masks = torch.tensor(np.concatenate([g["masks"] for g in groups]))
    actions = torch.tensor(np.concatenate([g["actions"] for g in groups]))
    adv = torch.cat([group_advantages(torch.tensor(g["rewards"]).float())[torch.tensor(g["items"])]
                     for g in groups])
    choice = masks.sum(dim=1) > 1  # a forced action carries no gradient
    if not bool(choice.any()):
        return torch.zeros((), requires_grad=True), 0.0
    dist = policy.distribution(feats[choice], masks[choice])
    entropy = dist.entropy().mean()
    loss = -(adv[choice] * dist.log_prob(actions[choice])).mean() - entropy_coef * entropy
    return loss, float(entropy.detach())


def make_policy_config(pipe, config: TrainConfig) -> PolicyConfig:
    """The policy a training run of `config` on `pipe` builds."""
    facts = ModelFacts.of(pipe)
    return PolicyConfig(config.model, facts.fingerprint, facts.patch_nums, facts.cond, facts.cond_dim,
                        parse_actions(config.actions), tuple(config.budgets), config.min_scale_share, config.hidden)


RolloutFn = Callable[[dict[str, torch.Tensor], list[Task], int], list[dict[str, Any]]]


def local_rollout(rollouts: Rollouts, group_size: int) -> RolloutFn:
    """Rollout function in this process (tests, notebooks); same seeds as the Ray one."""
    return lambda weights, tasks, seed: rollouts.run(weights, tasks, group_size,
                                                     [seed * 1000 + i for i in range(len(tasks))])


def update(policy: Policy, optimizer: torch.optim.Optimizer, rollout: RolloutFn, tasks: list[Task],
           config: TrainConfig, step: int) -> dict[str, float]:
    """Roll out `tasks` with the current policy and take one GRPO step; the curve row."""
    weights = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    t0 = time.perf_counter()
    groups = rollout(weights, tasks, config.seed * 7919 + step)
    seconds = time.perf_counter() - t0
    policy.train()
    loss, entropy = policy_gradient_loss(policy, groups, config.entropy_coef)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    policy.eval()
    episodes = sum(len(g["rewards"]) for g in groups)
    return {"update": step + 1, "episodes_in_update": episodes, "rollout_seconds": seconds,
            "episodes_per_s": episodes / max(seconds, 1e-9),
            "mean_reward": float(np.mean([g["rewards"].mean() for g in groups])),
            "fidelity": float(np.mean([g["fidelity"].mean() for g in groups])),
            "flops_share": float(np.mean([g["flops_share"].mean() for g in groups])),
            "loss": float(loss.detach()), "entropy": entropy}
