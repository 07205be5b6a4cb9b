"""The training run: updates until `episodes`, checkpoints, curves, resume, Ctrl-C.

`train` drives `trainer.update` with any rollout function (Ray actors in `actors.rl_train`,
or in-process `Rollouts`), so the loop, its files and its resume logic exist once.
Files under the output folder: `policy.safetensors` + `policy.json` (the checkpoint),
`curves.parquet` and `curves.png` (one row per update), all written atomically.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import torch

from ecad_ray.atomic import write_bytes_atomic, write_table_atomic
from ecad_ray.errors import UserError
from ecad_ray.var.rl.checkpoint import load_policy, meta_path, restore_optimizer, save_policy
from ecad_ray.var.rl.policy import Policy
from ecad_ray.var.rl.trainer import RolloutFn, TrainConfig, make_policy_config, pick_tasks, training_pool, update

POLICY_FILE = "policy.safetensors"
RESUME_MUST_MATCH = ("model", "group_size", "groups_per_update", "budgets", "flops_cost", "fidelity", "actions",
                     "min_scale_share", "seeds_per_condition", "hidden", "seed")


class Interrupted(UserError):
    """Ctrl-C during training: the last completed update is saved."""


def train(pipe, config: TrainConfig, output_dir: str | Path, rollout: RolloutFn, resume: bool = False,
          on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train until `config.episodes` episodes; returns the final policy.json content."""
    out = Path(output_dir)
    weights = out / POLICY_FILE
    policy, optimizer, curves = _start(pipe, config, weights, resume)
    pool = training_pool(pipe, config.seeds_per_condition)
    step = len(curves)
    episodes = int(sum(r["episodes_in_update"] for r in curves))
    saved = step
    try:
        while episodes < config.episodes:
            row = update(policy, optimizer, rollout, pick_tasks(pool, config, step), config, step)
            step += 1
            episodes += int(row["episodes_in_update"])
            row["episodes"] = episodes
            curves.append(row)
            if on_update:
                on_update(row)
            if step % config.checkpoint_every == 0:
                save_run(out, policy, optimizer, config, curves)
                saved = step
    except KeyboardInterrupt:
        if step > saved or not weights.exists():
            save_run(out, policy, optimizer, config, curves)
        raise Interrupted(f"interrupted after update {step} ({episodes} episodes); "
                          f"{weights} is usable, --resume continues") from None
    if step > saved or not weights.exists():
        save_run(out, policy, optimizer, config, curves)
    return json.loads(meta_path(weights).read_text())


def _start(pipe, config: TrainConfig, weights: Path, resume: bool):
    """A fresh policy, or the checkpoint's with its optimizer and curves (`--resume`)."""
    if weights.exists() and not resume:
        raise UserError(f"--output-dir {weights.parent}: already holds {POLICY_FILE}; pass --resume to continue it")
    if not resume or not weights.exists():
        with torch.random.fork_rng():  # the initial weights depend on --seed only
            torch.manual_seed(config.seed)
            policy = Policy(make_policy_config(pipe, config))
        return policy, torch.optim.Adam(policy.parameters(), lr=config.lr), []
    policy, doc, optim = load_policy(weights, "--resume")
    saved = doc.get("train_config", {})
    for key in RESUME_MUST_MATCH:
        mine = list(v) if isinstance(v := getattr(config, key), tuple) else v
        if saved.get(key) != mine:
            raise UserError(f"--resume {weights.parent}: --{key.replace('_', '-')} was {saved.get(key)!r} "
                            f"there, {mine!r} now")
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    restore_optimizer(optimizer, doc, optim)
    return policy, optimizer, list(doc.get("curves", []))


def save_run(out: Path, policy: Policy, optimizer, config: TrainConfig, curves: list[dict[str, Any]]) -> None:
    """Checkpoint + curves, each file atomically (weights, then the JSON naming their step)."""
    step = len(curves)
    meta = {"step": step, "episodes": curves[-1]["episodes"] if curves else 0,
            "train_config": json.loads(json.dumps(config.to_dict())), "curves": curves}
    save_policy(out / POLICY_FILE, policy, meta, optimizer)
    if curves:
        write_table_atomic(pa.Table.from_pylist(curves), out / "curves.parquet")
        write_bytes_atomic(out / "curves.png", curves_png(curves))


def curves_png(curves: list[dict[str, Any]]) -> bytes:
    """Mean reward, fidelity and FLOPs share per update, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["episodes"] for r in curves]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("mean_reward", "fidelity", "flops_share"):
        ax.plot(x, [r[key] for r in curves], label=key.replace("_", " "))
    ax.set_xlabel("episodes")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
