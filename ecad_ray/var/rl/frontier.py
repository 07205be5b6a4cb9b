"""The trade-off every pruning method makes: fidelity to the unpruned image vs FLOPs share.

On held-out conditions and seeds (seeds below the training pool's; a text model's prompts are
the demo's held-out captions) it runs the unpruned model, the seed's tail pattern, a
FastVAR-like tail, uniform ratios at several levels and, given a policy, the RL policy at
several budgets, all through `generate_items` (the path `var generate` takes). One row per
method: mean FLOPs share, SSIM, PSNR and LPIPS against the unpruned image of the same condition
and seed (the project's metric code, `ecad_ray.metrics.pairwise`), judge accuracy where the
prompts are demo shapes captions, generation seconds per image. Written as `frontier.parquet`
and `frontier.png`.

LPIPS runs on the ImageNet AlexNet backbone when torch's hub cache holds its weights, else on
lpips' fixed random backbone (it still ranks methods; the table's metadata and the CLI say
which). Judge accuracy = the mean of the judge's colour, shape and position accuracies
(`ecad_ray.judge.score`), null for class models and prompts outside the caption grammar.
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
from ecad_ray.metrics.pairwise import LpipsScorer, backbone_cached, psnr, ssim
from ecad_ray.var.controllers import FASTVAR_TAIL, NoPruning, TailPattern, UniformRatio
from ecad_ray.var.items import generate_items
from ecad_ray.var.rl.reward import PSNR_CAP_DB, to_uint8
from ecad_ray.var.rl.state import ModelFacts, flops_share


def heldout_conditions(pipe, limit: int | None = None) -> tuple[list[int] | None, list[str] | None]:
    """Every class, or the demo's held-out captions for a text model (never trained on)."""
    if pipe.text_conditional:
        from ecad_ray.shapes import heldout_captions

        return None, heldout_captions(limit)
    classes = list(range(pipe.config.var.num_classes))
    return classes[:limit] if limit else classes, None


def methods(pipe, policy: str | Path | None, budgets, uniform) -> list[tuple[str, str, float | None, Any]]:
    """(method, kind, budget, controller) of every row of the frontier."""
    out = [("unpruned", "unpruned", None, NoPruning()), ("tail pattern", "fixed", None, TailPattern()),
           ("fastvar-like", "fixed", None, TailPattern(FASTVAR_TAIL))]
    out += [(f"uniform {u:g}", "uniform", None, UniformRatio(u)) for u in uniform]
    if policy is not None:
        from ecad_ray.var.rl.checkpoint import policy_controller

        out += [(f"rl @{b:g}", "rl", b, policy_controller(policy, pipe, b, option="--policy")) for b in budgets]
    return out


def judge_accuracy(prompts: list[str], images_BHWC: np.ndarray) -> float | None:
    """Mean of the judge's colour, shape and position accuracy, or None when no prompt is a demo
    shapes caption (a class model, other prompts)."""
    from ecad_ray.shapes import parse_caption

    if not any(parse_caption(p) is not None for p in prompts):
        return None
    from ecad_ray.judge import score

    if images_BHWC.shape[1:3] != (32, 32):  # the judge reads 32x32 images
        x = torch.from_numpy(images_BHWC).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="area")
        images_BHWC = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    fid = score(prompts, images_BHWC)
    parts = [v for v in (fid.colour, fid.shape, fid.position) if not math.isnan(v)]
    return float(np.mean(parts)) if parts else None


def evaluate_methods(pipe, rows: list[tuple[int, str, int]], entries, batch_size: int = 16,
                     lpips: LpipsScorer | None = None) -> list[dict[str, Any]]:
    """One result row per method over `rows` of (class, prompt, seed)."""
    facts = ModelFacts.of(pipe)
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    conds = [pipe.conditions(classes=[r[0] for r in part]) if part[0][0] >= 0
             else pipe.conditions(prompts=[r[1] for r in part]) for part in batches]  # encoded once
    prompts = [r[1] for r in rows]
    reference: np.ndarray | None = None
    out = []
    for method, kind, budget, controller in entries:
        images, shares, seconds = [], [], 0.0
        for part, cond in zip(batches, conds):
            result = generate_items(pipe, cond, [r[2] for r in part], controller)
            seconds += result.transformer_seconds + result.decode_seconds + result.controller_seconds
            images += list(to_uint8(result.images_B3HW))
            shares += [flops_share(facts, r) for r in result.item_ratios]
        stacked = np.stack(images)
        if reference is None:
            reference = stacked  # the first method is the unpruned model
        psnrs = [min(psnr(a, b), PSNR_CAP_DB) for a, b in zip(stacked, reference)]
        lpips_values = ([v for i in range(0, len(stacked), 64) for v in lpips(stacked[i:i + 64], reference[i:i + 64])]
                        if lpips is not None else None)
        out.append({"method": method, "kind": kind, "budget": budget, "images": len(images),
                    "flops_share": float(np.mean(shares)),
                    "ssim": float(np.mean([ssim(a, b) for a, b in zip(stacked, reference)])),
                    "psnr": float(np.mean(psnrs)),
                    "lpips": float(np.mean(lpips_values)) if lpips_values is not None else None,
                    "judge_accuracy": judge_accuracy(prompts, stacked),
                    "seconds_per_image": seconds / len(images)})
    return out


def lpips_scorer(enabled: bool = True) -> tuple[LpipsScorer | None, str]:
    """(scorer, backbone description): ImageNet AlexNet when cached, else the random backbone."""
    if not enabled:
        return None, "off"
    if backbone_cached("alex"):
        return LpipsScorer("alex"), "ImageNet"
    return LpipsScorer("alex", random_backbone=True), "random (ImageNet weights absent)"


def run_frontier(model: str, output_dir: str | Path, policy: str | Path | None = None,
                 budgets=(0.3, 0.4, 0.5, 0.7), uniform=(0.25, 0.5, 0.75), seeds_per_condition: int = 8,
                 batch_size: int = 16, lpips: bool = True, conditions: int | None = None) -> pa.Table:
    """Evaluate every method on held-out conditions (the first `conditions`, default all) x seeds
    0..k-1; write table and plot. The table's metadata names the LPIPS backbone."""
    from ecad_ray.var.checkpoints import load_var_model

    torch.set_num_threads(1)
    pipe = load_var_model(model)
    classes, prompts = heldout_conditions(pipe, conditions)
    conds = [(c, "") for c in classes] if classes else [(-1, p) for p in prompts]
    rows = [(c, p, s) for c, p in conds for s in range(seeds_per_condition)]
    entries = methods(pipe, policy, budgets, uniform)
    scorer, backbone = lpips_scorer(lpips)
    table = pa.Table.from_pylist(evaluate_methods(pipe, rows, entries, batch_size, scorer))
    table = table.replace_schema_metadata({"lpips_backbone": backbone, "model": model})
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
