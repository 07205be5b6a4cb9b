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
    from ecad_ray.var.run import VarRunOptions, plan_var_run

    options = VarRunOptions(model=model, controller=f"rl:{policy}")
    conditions = len(plan_var_run(options))  # every class, or the held-out captions of a text model
    rows = plan_var_run(options, images_per_condition=math.ceil(4 * batch_size / conditions))[: 4 * batch_size]
    configs = run_var_generate(rows, options,
                               out / f"generate-{model.replace(':', '-')}-{batch_size}", num_actors=1,
                               batch_size=batch_size)
    ctrl = sum(c["controller_seconds"] for c in configs) / batch_size  # per batch, recorded on each item
    gen = sum(c["transformer_seconds"] + c["decode_seconds"] + c["controller_seconds"] for c in configs) / batch_size
    share = ctrl / gen if gen else math.nan
    print(f"(c) {model}, batch {batch_size}: controller {ctrl * 1e3:.1f} ms of {gen * 1e3:.1f} ms generation "
          f"= {share:.1%} (target <= 5%)")


def untrained_policy(model: str, out: Path) -> str:
    """A policy with random weights for `model`: what (c) measures does not depend on training."""
    from ecad_ray.var.checkpoints import load_var_model
    from ecad_ray.var.rl.checkpoint import save_policy
    from ecad_ray.var.rl.policy import Policy
    from ecad_ray.var.rl.trainer import TrainConfig, make_policy_config

    path = out / f"untrained-{model.replace(':', '-')}.safetensors"
    save_policy(path, Policy(make_policy_config(load_var_model(model), TrainConfig(model=model))), {"step": 0})
    return str(path)


def ray_floor() -> None:
    """The round trip of a no-op actor call: the floor any Ray-served controller pays per scale."""
    import ray

    from actors.plan import loopback_only

    @ray.remote(num_cpus=0)
    class Echo:
        def act(self, x):
            return x

    with loopback_only():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            echo = Echo.remote()
            ray.get(echo.act.remote(0))
            t0 = time.perf_counter()
            for _ in range(200):
                ray.get(echo.act.remote(0))
            print(f"    Ray floor: a no-op actor round trip takes {(time.perf_counter() - t0) / 200 * 1e3:.2f} ms")
        finally:
            ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-var")
    ap.add_argument("--policy", required=True, help="a trained policy.safetensors for --model")
    ap.add_argument("--episodes", type=int, default=1280, help="episodes per throughput run")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16, 64],
                    help="batch sizes for (c): a round trip costs the same for any batch, a batch's work grows")
    ap.add_argument("--overhead-model", default="random:benchmark",
                    help="a second, compute-bound model for (c), served by an untrained policy")
    ap.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c"], help="parts not to run")
    ap.add_argument("--output-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="rl_bench_")))
    args = ap.parse_args()
    if "a" not in args.skip:
        frontier(args.model, args.policy, args.output_dir)
    if "b" not in args.skip:
        throughput(args.model, args.episodes)
    if "c" not in args.skip:
        for batch_size in args.batch_size:
            overhead(args.model, args.policy, args.output_dir, batch_size)
        if args.overhead_model:
            overhead(args.overhead_model, untrained_policy(args.overhead_model, args.output_dir), args.output_dir,
                     args.batch_size[0])
        ray_floor()


if __name__ == "__main__":
    main()
