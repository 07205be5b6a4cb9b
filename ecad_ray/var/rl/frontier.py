"""The trade-off every pruning method makes: fidelity to the unpruned image vs FLOPs share.

On held-out conditions and seeds (seeds below the training pool's) it runs the unpruned model,
the seed's tail pattern, a FastVAR-like tail, uniform ratios at several levels and, given a
policy, the RL policy at several budgets, all through `generate_items` (the path `var
generate` takes). One row per method: mean FLOPs share, SSIM and PSNR against the unpruned
image of the same condition and seed, generation seconds per image. Written as
`frontier.parquet` and `frontier.png`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ecad_ray.atomic import write_bytes_atomic, write_table_atomic
from ecad_ray.metrics.pairwise import psnr, ssim
from ecad_ray.var.controllers import FASTVAR_TAIL, NoPruning, TailPattern, UniformRatio
from ecad_ray.var.items import generate_items
from ecad_ray.var.rl.reward import PSNR_CAP_DB, to_uint8
from ecad_ray.var.rl.state import ModelFacts, flops_share


def heldout_conditions(pipe) -> tuple[list[int] | None, list[str] | None]:
    """Every class, or the demo's held-out captions for a text model (never trained on)."""
    if pipe.config.var.cond == "text":
        from ecad_ray.shapes import heldout_captions

        return None, heldout_captions()
    return list(range(pipe.config.var.num_classes)), None


def methods(pipe, policy: str | Path | None, budgets, uniform) -> list[tuple[str, str, float | None, Any]]:
    """(method, kind, budget, controller) of every row of the frontier."""
    out = [("unpruned", "unpruned", None, NoPruning()), ("tail pattern", "fixed", None, TailPattern()),
           ("fastvar-like", "fixed", None, TailPattern(FASTVAR_TAIL))]
    out += [(f"uniform {u:g}", "uniform", None, UniformRatio(u)) for u in uniform]
    if policy is not None:
        from ecad_ray.var.rl.checkpoint import policy_controller

        out += [(f"rl @{b:g}", "rl", b, policy_controller(policy, pipe, b, option="--policy")) for b in budgets]
    return out


def evaluate_methods(pipe, rows: list[tuple[int, str, int]], entries, batch_size: int = 16) -> list[dict[str, Any]]:
    """One result row per method over `rows` of (class, prompt, seed)."""
    facts = ModelFacts.of(pipe)
    reference: list[np.ndarray] = []
    out = []
    for method, kind, budget, controller in entries:
        images, shares, seconds = [], [], 0.0
        for i in range(0, len(rows), batch_size):
            part = rows[i:i + batch_size]
            cond = (pipe.conditions(classes=[r[0] for r in part]) if part[0][0] >= 0
                    else pipe.conditions(prompts=[r[1] for r in part]))
            result = generate_items(pipe, cond, [r[2] for r in part], controller)
            seconds += result.transformer_seconds + result.decode_seconds + result.controller_seconds
            images += list(to_uint8(result.images_B3HW))
            shares += [flops_share(facts, r) for r in result.item_ratios]
        if not reference:
            reference = images  # the first method is the unpruned model
        psnrs = [min(psnr(a, b), PSNR_CAP_DB) for a, b in zip(images, reference)]
        out.append({"method": method, "kind": kind, "budget": budget, "images": len(images),
                    "flops_share": float(np.mean(shares)), "ssim": float(np.mean([ssim(a, b) for a, b in zip(images, reference)])),
                    "psnr": float(np.mean(psnrs)), "judge_accuracy": None,
                    "seconds_per_image": seconds / len(images)})
    return out


def run_frontier(model: str, output_dir: str | Path, policy: str | Path | None = None,
                 budgets=(0.3, 0.4, 0.5, 0.7), uniform=(0.25, 0.5, 0.75), seeds_per_condition: int = 8,
                 batch_size: int = 16) -> pa.Table:
    """Evaluate every method on held-out conditions x seeds 0..k-1; write table and plot."""
    from ecad_ray.var.checkpoints import load_var_model

    torch.set_num_threads(1)
    pipe = load_var_model(model)
    classes, prompts = heldout_conditions(pipe)
    conds = [(c, "") for c in classes] if classes else [(-1, p) for p in prompts]
    rows = [(c, p, s) for c, p in conds for s in range(seeds_per_condition)]
    entries = methods(pipe, policy, budgets, uniform)
    table = pa.Table.from_pylist(evaluate_methods(pipe, rows, entries, batch_size))
    out = Path(output_dir)
    write_table_atomic(table, out / "frontier.parquet")
    write_bytes_atomic(out / "frontier.png", frontier_png(table.to_pylist(), model))
    return table


def frontier_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """SSIM vs FLOPs share, one marker per method; RL budgets joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = {"unpruned": "*", "fixed": "s", "uniform": "^", "rl": "o"}
    for kind, marker in markers.items():
        pts = [r for r in rows if r["kind"] == kind]
        if not pts:
            continue
        xs, ys = [r["flops_share"] for r in pts], [r["ssim"] for r in pts]
        ax.plot(xs, ys, marker=marker, linestyle="-" if kind == "rl" else "none", label=kind)
        for r in pts:
            ax.annotate(r["method"], (r["flops_share"], r["ssim"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("FLOPs share of unpruned")
    ax.set_ylabel("SSIM to unpruned")
    ax.set_title(f"pruning frontier: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def at_share(rows: list[dict[str, Any]], kind: str, share: float) -> float:
    """SSIM of `kind`'s curve interpolated at a FLOPs share (nan outside its range)."""
    pts = sorted((r["flops_share"], r["ssim"]) for r in rows if r["kind"] == kind)
    if not pts or not pts[0][0] <= share <= pts[-1][0]:
        return math.nan
    return float(np.interp(share, [p[0] for p in pts], [p[1] for p in pts]))
