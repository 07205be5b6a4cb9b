"""Soak: one long `generate` run on the demo model, checked for flat memory and steady speed.

Claims under test (issue targets in brackets):
- memory stays flat: the peak RSS of the driver and of each Ray actor after all images vs after
  the first `--early` images [ratio <= 1.2];
- Ray's object store stays bounded: the shared memory it holds (`/dev/shm`, sampled; pages it
  has touched stay counted, so this is its high-water mark) never exceeds `--store-bound-mib`;
- throughput is steady: images/s over the last 10% of batches vs the first 10% (the first batch,
  which includes model loading, left out) [>= 0.9].

RSS is read from /proc for each process by one sampler (`psutil`, every `--sample-s`), so
every figure it compares comes from the same counter. Run:
    python benchmarks/soak.py [--images 2000] [--early 200] [--batch-size 8]   # at least --images: whole prompts
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

MIB = 2**20
SHM = "/dev/shm"


class Sampler(threading.Thread):
    """Peak RSS per process (the driver and every Ray actor) and peak shared memory, sampled."""

    def __init__(self, every_s: float):
        super().__init__(daemon=True)
        self.every_s = every_s
        self.peaks: dict[str, int] = {}  # "driver" or "actor <pid> <name>" -> peak RSS bytes
        self.shm_peak = 0
        self.shm_base = shutil.disk_usage(SHM).used if os.path.isdir(SHM) else 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def snapshot(self) -> tuple[dict[str, int], int]:
        with self.lock:
            return dict(self.peaks), self.shm_peak

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            seen = {"driver": me.memory_info().rss}
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if cmd.startswith("ray::MapWorker"):
                    try:
                        seen[f"actor {proc.info['pid']} {cmd.split('(', 2)[-1].split(')')[0]}"] = proc.memory_info().rss
                    except psutil.Error:
                        pass
            shm = (shutil.disk_usage(SHM).used - self.shm_base) if os.path.isdir(SHM) else 0
            with self.lock:
                for key, rss in seen.items():
                    self.peaks[key] = max(self.peaks.get(key, 0), rss)
                self.shm_peak = max(self.shm_peak, shm)
            self.stop.wait(self.every_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--early", type=int, default=200, help="images after which the early peaks are taken")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sample-s", type=float, default=0.5)
    parser.add_argument("--store-bound-mib", type=float, default=512.0)
    args = parser.parse_args()

    from actors.plan import run_generate
    from ecad_ray.config import GenerateConfig
    from ecad_ray.shapes import heldout_captions

    captions = heldout_captions()
    per_prompt = -(-args.images // len(captions))  # ceil
    sampler = Sampler(args.sample_s)
    batch_times: list[tuple[float, int]] = []  # (time the batch reached the driver, images so far)
    early: dict[str, int] = {}

    def progress(done: int, total: int) -> None:
        batch_times.append((time.perf_counter(), done))
        if not early and done >= args.early:
            early.update(sampler.snapshot()[0])

    with tempfile.TemporaryDirectory() as tmp:
        config = GenerateConfig(model="demo", output_dir=str(Path(tmp) / "soak"), prompts=tuple(captions),
                                num_images_per_prompt=per_prompt, batch_size=args.batch_size, steps=args.steps)
        print(f"soak: {len(captions) * per_prompt} demo images ({len(captions)} captions x {per_prompt}), "
              f"batch {args.batch_size}, {args.steps} steps, 1 worker")
        sampler.start()
        started = time.perf_counter()
        summary = run_generate(config, progress)
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
    final, shm_peak = sampler.snapshot()
    print(f"  {summary.new_images} images in {wall:.0f} s ({summary.new_images / wall:.2f} images/s overall)")

    print(f"  peak RSS (MiB) after {args.early} images vs after all:")
    ratios = []
    for key in sorted(early):
        if key in final and early[key]:
            ratio = final[key] / early[key]
            ratios.append(ratio)
            print(f"    {key:48s} {early[key] / MIB:8.1f} {final[key] / MIB:8.1f}  ratio {ratio:.3f}")
    worst = max(ratios) if ratios else float("nan")
    print(f"  worst RSS ratio {worst:.3f} ({'meets' if worst <= 1.2 else 'MISSES'} the <= 1.2 target)")
    print(f"  object store shared memory, peak: {shm_peak / MIB:.1f} MiB "
          f"({'within' if shm_peak / MIB <= args.store_bound_mib else 'ABOVE'} the {args.store_bound_mib:.0f} MiB bound)")

    steady = batch_times[1:]  # the first batch includes loading the models
    tenth = max(1, len(steady) // 10)
    if len(steady) >= 2 * tenth + 1:
        def rate(part):
            (t0, n0), (t1, n1) = part[0], part[-1]
            return (n1 - n0) / (t1 - t0)

        first, last = rate(steady[: tenth + 1]), rate(steady[-tenth - 1:])
        ratio = last / first
        print(f"  throughput first 10% {first:.2f} images/s, last 10% {last:.2f} images/s: ratio {ratio:.3f} "
              f"({'meets' if ratio >= 0.9 else 'MISSES'} the >= 0.9 target)")
    else:
        print("  too few batches to compare the first and last 10%")


if __name__ == "__main__":
    main()
