"""ECAD's search on the trained demo model, then its front against every other caching method.

    python benchmarks/schedule_search.py --quick            # population 8, 2 generations, 4 prompts
    python benchmarks/schedule_search.py                    # population 24, 10 generations (<= 60 min, 2 CPUs)
    python benchmarks/schedule_search.py --workers-check    # 1 vs 2 workers on the seed generation

Prints: the search's wall time and candidates/s; one table of the searched front, the FORA /
every-N / TGATE baselines and diffusers' caches (PAB, FirstBlockCache, FasterCache; cache-dit
when installed) on held-out prompts, with quality (judge accuracy), fidelity to the uncached
images (PSNR, SSIM), seconds per image and MACs (schedules only); and a speed-vs-quality PNG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.search import search_on_ray  # noqa: E402
from ecad_ray.search.algorithm import NsgaSettings  # noqa: E402
from ecad_ray.search.evaluator import EvalJob  # noqa: E402
from ecad_ray.search.run import SearchConfig, front_rows, front_table  # noqa: E402


def _prompts(path: Path, n: int) -> tuple[str, ...]:
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())[:n]


def search(out: Path, prompts, population: int, generations: int, workers: int) -> tuple[float, int]:
    """Run the search; (seconds spent scoring candidates, candidates scored)."""
    marks: list[tuple[float, int]] = []
    config = SearchConfig(model="demo", job=EvalJob(prompts, 1, batch_size=len(prompts)), output_dir=str(out),
                          objective="judge", generations=generations, nsga=NsgaSettings(population=population),
                          num_workers=workers, resume=True)
    search_on_ray(config, lambda p: marks.append((time.perf_counter(), p.evaluated)))
    scored = [m for m in marks if m[1] > 0]
    if not scored:  # a finished search resumed: nothing left to score
        return float("nan"), 0
    first = next(i for i, m in enumerate(marks) if m[1] > 0)
    return scored[-1][0] - marks[first - 1][0], scored[-1][1]


def compare(out: Path, prompts, front: list[dict], steps: int = 20) -> list[dict]:
    """Every method on the held-out prompts, same seeds, one worker in this process."""
    import numpy as np

    from ecad_ray.caching import load_schedule, resolve_spec
    from ecad_ray.caching.baselines import BaselineParams, make_baseline
    from ecad_ray.caching.macs import schedule_mac_report
    from ecad_ray.peers import apply_method, parse_method
    from ecad_ray.search.run import InProcessEvaluator

    config = SearchConfig(model="demo", job=EvalJob(prompts, 1, batch_size=len(prompts)), output_dir=str(out))
    evaluator = InProcessEvaluator(config)
    reference = evaluator.reference()
    evaluator.open(reference)
    worker = evaluator.worker
    spec = resolve_spec("demo")
    methods = [("searched " + r["name"], load_schedule(out / r["file"])) for r in front]
    methods += [(k, make_baseline(kind, spec, steps, p)) for k, kind, p in (
        ("fora 2", "fora", BaselineParams(interval=2)), ("fora 3", "fora", BaselineParams(interval=3)),
        ("every attn1=2,ff=3", "every", BaselineParams(every={"attn1": 2, "ff": 3})),
        ("tgate 10", "tgate", BaselineParams(gate_step=10, sp_interval=3)))]
    rows = []
    for name, schedule in methods:
        scores = worker.evaluate(schedule)
        rows.append({"method": name, **scores, "macs_ratio": schedule_mac_report(schedule, spec).ratio})
    for text in ("pab:skip=2", "pab:skip=3,range=0-1000", "fbc:threshold=0.1", "fbc:threshold=0.3", "faster:skip=2",
                 "cache-dit:F1B0,R0.12"):
        try:
            remove = apply_method(worker.generator.pipe, parse_method(text), steps)
        except Exception as err:  # noqa: BLE001  (cache-dit absent: say so, carry on)
            print(f"{text}: skipped ({err})")
            continue
        try:
            scores = worker.evaluate(None)
        finally:
            remove()
        rows.append({"method": text, **scores, "macs_ratio": float("nan")})
    base = worker.evaluate(None)
    rows.insert(0, {"method": "uncached", **base, "macs_ratio": 1.0})
    for r in rows:
        r["speedup"] = base["seconds_per_image"] / r["seconds_per_image"]
    _plot(rows, out / "speed_vs_quality.png")
    return rows


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        kind = "searched" if r["method"].startswith("searched") else ("peer" if ":" in r["method"] else "baseline")
        ax.scatter(r["speedup"], r["quality"], marker={"searched": "*", "peer": "s", "baseline": "o"}[kind],
                   color={"searched": "C3", "peer": "C0", "baseline": "C2"}[kind], label=kind)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one legend entry per kind
    ax.legend(list(unique.values()), list(unique))
    ax.set_xlabel("speedup (measured, s/image)")
    ax.set_ylabel("judge accuracy")
    ax.set_title("demo: caching methods")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers-check", action="store_true")
    ap.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "schedule_search")
    ap.add_argument("--num-workers", type=int, default=1)
    args = ap.parse_args()
    prompts = _prompts(ROOT / "prompts" / "demo.txt", 4 if args.quick else 8)
    heldout = _prompts(ROOT / "prompts" / "demo_heldout.txt", 8)
    if args.workers_check:
        times = {}
        for n in (1, 2):
            seconds, count = search(args.output_dir / f"workers_{n}", prompts, 8, 0, n)
            times[n] = count / seconds
            print(f"{n} worker(s): {count} candidates in {seconds:.1f} s = {times[n]:.3f} candidates/s")
        print(f"2 workers / 1 worker: {times[2] / times[1]:.2f}x (target >= 1.7x)")
        return
    population, generations = (8, 2) if args.quick else (24, 10)
    started = time.perf_counter()
    seconds, count = search(args.output_dir / "search", prompts, population, generations, args.num_workers)
    print(f"search: population {population}, {generations} generations, {count} candidates scored in "
          f"{seconds:.1f} s ({count / seconds:.3f}/s); wall {time.perf_counter() - started:.1f} s")
    front = front_rows(args.output_dir / "search")
    print(front_table(front))
    rows = compare(args.output_dir / "search", heldout, front)
    print(f"\n{'method':<34} {'speedup':>7} {'MACs':>6} {'quality':>8} {'psnr':>6} {'ssim':>6}")
    for r in rows:
        print(f"{r['method']:<34} {r['speedup']:>6.2f}x {r['macs_ratio']:>6.3f} {r['quality']:>8.3f} "
              f"{r.get('psnr', float('nan')):>6.2f} {r.get('ssim', float('nan')):>6.3f}")
    print(f"plot: {args.output_dir / 'search' / 'speed_vs_quality.png'}")


if __name__ == "__main__":
    main()
