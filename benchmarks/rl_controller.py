"""RL pruning controller, in one run: (a) the frontier, (b) training throughput 2 vs 1 workers,
(c) controller round-trip overhead of an actor-served policy in generation.

Targets (issue 17): (a) at the tail pattern's FLOPs the policy's SSIM beats the tail pattern's,
and at the best fixed pattern's SSIM it needs >= 15% fewer FLOPs; (b) >= 1.7x episodes/s with
2 workers; (c) controller round trips <= 5% of generation time.

    python benchmarks/rl_controller.py --model demo-var --policy D/policy.safetensors
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path


def frontier(model: str, policy: str, out: Path) -> None:
    import numpy as np

    from ecad_ray.var.checkpoints import load_var_model
    from ecad_ray.var.controllers import FASTVAR_TAIL, TailPattern
    from ecad_ray.var.rl.frontier import at_share, run_frontier
    from ecad_ray.var.rl.state import ModelFacts, flops_share

    pipe = load_var_model(model)
    facts, n = ModelFacts.of(pipe), len(pipe.patch_nums)
    fixed = [flops_share(facts, [c.ratio(i, n) for i in range(n)]) for c in (TailPattern(), TailPattern(FASTVAR_TAIL))]
    budgets = sorted({round(b, 4) for b in fixed + [0.2, 0.3, 0.5, 0.7]})
    rows = run_frontier(model, out, policy, budgets, (0.25, 0.5, 0.75)).to_pylist()
    print(f"(a) frontier ({out / 'frontier.parquet'}):")
    for r in rows:
        print(f"    {r['method']:<16} FLOPs {r['flops_share']:.3f}  SSIM {r['ssim']:.3f}  PSNR {r['psnr']:5.1f} dB")
    tail = next(r for r in rows if r["method"] == "tail pattern")
    rl_at_tail = at_share(rows, "rl", tail["flops_share"])
    print(f"    at the tail pattern's FLOPs ({tail['flops_share']:.3f}): RL SSIM {rl_at_tail:.3f} "
          f"vs tail {tail['ssim']:.3f} (target: higher)")
    fixed_rows = [r for r in rows if r["kind"] in ("fixed", "uniform")]
    rl = sorted((r for r in rows if r["kind"] == "rl"), key=lambda r: r["ssim"])
    savings = []
    for f in fixed_rows:  # FLOPs the policy needs for the same SSIM, where its curve reaches it
        if rl and rl[0]["ssim"] <= f["ssim"] <= rl[-1]["ssim"]:
            need = float(np.interp(f["ssim"], [r["ssim"] for r in rl], [r["flops_share"] for r in rl]))
            savings.append((1 - need / f["flops_share"], f["method"]))
    if savings:
        best = max(savings)
        print(f"    at equal SSIM: RL saves {best[0]:.0%} FLOPs vs {best[1]} (target >= 15%); "
              + ", ".join(f"{m}: {s:.0%}" for s, m in savings))
    else:
        print("    at equal SSIM: no fixed pattern lies within the RL curve's SSIM range")


def throughput(model: str, episodes: int) -> None:
    import ray

    from actors.plan import loopback_only
    from actors.rl_train import run_rl_train
    from ecad_ray.var.checkpoints import load_var_model
    from ecad_ray.var.rl.trainer import TrainConfig

    pipe = load_var_model(model)
    rates = {}
    with loopback_only():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            for workers in (1, 2):
                cfg = TrainConfig(model=model, episodes=episodes, checkpoint_every=1000)
                with tempfile.TemporaryDirectory() as d:
                    t0 = time.perf_counter()
                    doc = run_rl_train(pipe, cfg, d, num_workers=workers)
                    wall = time.perf_counter() - t0
                rollout = sum(r["rollout_seconds"] for r in doc["curves"][1:])  # update 1 loads references
                eps = sum(r["episodes_in_update"] for r in doc["curves"][1:])
                rates[workers] = eps / rollout
                print(f"(b) {workers} worker(s): {rates[workers]:.1f} episodes/s in rollouts "
                      f"({doc['episodes']} episodes, {wall:.1f} s wall incl. actor start)")
        finally:
            ray.shutdown()
    print(f"    2 vs 1 workers: {rates[2] / rates[1]:.2f}x (target >= 1.7x)")


def overhead(model: str, policy: str, out: Path, batch_size: int) -> None:
    from actors.var_plan import run_var_generate
    from ecad_ray.var.run import VarRunOptions, build_rows

    rows = build_rows(list(range(10)), None, 8, seed=0)
    configs = run_var_generate(rows, VarRunOptions(model=model, controller=f"rl:{policy}"), out / "generate",
                               num_actors=1, batch_size=batch_size)
    ctrl = sum(c["controller_seconds"] for c in configs) / batch_size  # per batch, recorded on each item
    gen = sum(c["transformer_seconds"] + c["decode_seconds"] + c["controller_seconds"] for c in configs) / batch_size
    share = ctrl / gen if gen else math.nan
    print(f"(c) batch {batch_size}: controller round trips {ctrl * 1e3:.1f} ms of {gen * 1e3:.1f} ms generation "
          f"= {share:.1%} (target <= 5%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-var")
    ap.add_argument("--policy", required=True, help="a trained policy.safetensors for --model")
    ap.add_argument("--episodes", type=int, default=1280, help="episodes per throughput run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--output-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="rl_bench_")))
    args = ap.parse_args()
    frontier(args.model, args.policy, args.output_dir)
    throughput(args.model, args.episodes)
    overhead(args.model, args.policy, args.output_dir, args.batch_size)


if __name__ == "__main__":
    main()
