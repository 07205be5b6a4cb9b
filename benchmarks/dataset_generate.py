"""`dataset generate` on the demo model: images/s with 1 vs 2 workers, ledger overhead, and the
train-on-generated accuracy of two prompt strategies side by side.

    python benchmarks/dataset_generate.py [--classes 0:8] [--images-per-class 32] [--steps 20]

Targets: 2 workers >= 1.7x the images/s of 1 (on a machine with a core per worker to spare),
ledger calls <= 2% of generation time. Images/s is measured between the first and the last image
a run writes (steady state: Ray start and model loading left out) and also given over the whole
run. The two strategies are made here as prompt files in nameonly's layout: `plain` ("a red
circle") and `varied` (sizes and backgrounds named, as richer prompts would). The load average
is printed because on a shared machine it decides the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from actors.dataset_plan import run_dataset_generate
from ecad_ray.dataset.check import check_dataset
from ecad_ray.dataset.classes import load_class_set
from ecad_ray.dataset.generation import DatasetConfig

STRATEGIES = {
    "plain": ["a {}"],
    "varied": ["a small {}", "a large {}", "a {} on a striped background", "a {} on a dotted background",
               "a small {} on a plain background", "a large {} on a dotted background"],
}


def prompt_file(path: Path, templates: list[str]) -> Path:
    data = {c: {"metaprompts": [{"index": 0, "metaprompt": "template",
                                 "prompts": [{"index": i, "content": t.format(c)} for i, t in enumerate(templates)]}]}
            for c in load_class_set("shapes").classes}
    path.write_text(json.dumps(data))
    return path


def timed_run(config: DatasetConfig) -> dict:
    stamps: list[tuple[float, int]] = []
    summary = run_dataset_generate(config, lambda done, total: stamps.append((time.perf_counter(), done)))
    (t0, n0), (t1, n1) = stamps[0], stamps[-1]
    return dict(images=summary.new_images, wall=summary.wall_seconds, steady=(n1 - n0) / max(t1 - t0, 1e-9),
                ledger=summary.ledger_seconds, generation=summary.generation_seconds, tasks=summary.tasks_done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="0:8", help="class range of the shapes set for the speed runs")
    parser.add_argument("--images-per-class", type=int, default=32,
                        help="per class of --classes for the speed runs (fewer leave the second actor's start-up in the steady rate)")
    parser.add_argument("--accuracy-images-per-class", type=int, default=12, help="per class, all 24 classes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = prompt_file(tmp / "plain.json", STRATEGIES["plain"])
        runs = {}
        for workers in (1, 2):
            cfg = DatasetConfig(output_dir=str(tmp / f"speed{workers}"), prompts=str(plain), dataset="shapes",
                                class_range=args.classes, images_per_class=args.images_per_class, steps=args.steps,
                                batch_size=4, chunk_size=8, num_workers=workers)
            runs[workers] = timed_run(cfg)
            r = runs[workers]
            print(f"{workers} worker(s): {r['images']} images, {r['steady']:.2f} images/s steady, "
                  f"{r['images'] / r['wall']:.2f} images/s over the whole run ({r['wall']:.1f} s); "
                  f"load average now {os.getloadavg()[0]:.2f}")
        print(f"speed-up 2 vs 1 workers: {runs[2]['steady'] / runs[1]['steady']:.2f}x steady "
              f"(target >= 1.7x with a free core per worker)")
        for workers, r in runs.items():
            print(f"ledger overhead ({workers} worker(s)): {r['ledger'] * 1e3:.1f} ms in ledger calls for {r['tasks']} tasks "
                  f"({r['ledger'] / r['tasks'] * 1e3:.2f} ms per task) = {100 * r['ledger'] / r['generation']:.2f}% "
                  "of generation time (target <= 2%)")
        scores = {}
        for name, templates in STRATEGIES.items():
            out = tmp / f"acc-{name}"
            cfg = DatasetConfig(output_dir=str(out), prompts=str(prompt_file(tmp / f"{name}.json", templates)),
                                dataset="shapes", images_per_class=args.accuracy_images_per_class, steps=args.steps,
                                batch_size=8, chunk_size=args.accuracy_images_per_class, num_workers=2)
            run_dataset_generate(cfg)
            scores[name] = check_dataset(out, epochs=args.epochs)
        print(f"train on generated ({args.accuracy_images_per_class} images x 24 classes), test on real "
              f"({scores['plain'].real_images} images), 32 px CNN, {args.epochs} epochs:")
        for name, check in scores.items():
            print(f"  {name:<7} accuracy {check.accuracy:.3f}  (chance {1 / 24:.3f})")
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
