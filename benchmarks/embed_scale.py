"""Peak memory of `ecad-ray embed` on 3k vs 30k COCO captions with the demo model.

Streaming claim under test: embedding memory does not grow with the prompt set. Each size
runs in a fresh process (so one run's peak cannot hide the other's) that embeds into an
empty store and reports its peak RSS and how far embedding raised it above the RSS after the
imports, both from one counter (`ecad_ray.peak_memory`: the kernel's high-water mark, reset
after the imports). Prints both peaks, the ratio (target <= 1.2) and the wall time.

    python benchmarks/embed_scale.py [--coco /path/COCO_caption_prompts_30k.txt] [--sizes 3000,30000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COCO = ROOT.parent / "shared" / "prompts" / "COCO_caption_prompts_30k.txt"  # the sample data beside the checkout


def child(coco: Path, limit: int, batch_size: int, store: Path) -> None:
    """Run `ecad-ray embed` in this process, then print peak RSS in MiB."""
    sys.argv = ["ecad-ray", "embed", "--dataset", "coco", "--file-path", str(coco), "--output-dir", str(store),
                "--model", "demo", "--prompt-batch-size", str(batch_size), "--limit", str(limit), "--device", "cpu"]
    import torch

    from ecad_ray.peak_memory import MemoryWindow
    from ecad_ray_cli.main import main

    window = MemoryWindow(torch.device("cpu"))
    try:
        main()
    except SystemExit as done:
        if done.code:
            raise
    figures = window.figures()
    print(f"PEAK_RSS_MIB {figures.peak_bytes / 2**20:.1f} {(figures.peak_bytes - figures.before_bytes) / 2**20:.1f}")


def measure(coco: Path, limit: int, batch_size: int) -> tuple[float, float, float, int]:
    """(peak RSS MiB, its rise above the post-import RSS MiB, seconds, stored prompts), fresh process."""
    from ecad_ray.embeddings import EmbeddingStore

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        started = time.time()
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(limit), "--coco", str(coco), "--batch-size", str(batch_size),
             "--store", str(store)],
            env=env, capture_output=True, text=True, check=True,
        )
        seconds = time.time() - started
        line = next(line for line in out.stdout.splitlines() if line.startswith("PEAK_RSS_MIB"))
        peak, rise = (float(x) for x in line.split()[1:])
        stored = EmbeddingStore(store).index().num_rows
    return peak, rise, seconds, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO, help="COCO captions, one per line")
    parser.add_argument("--sizes", default="3000,30000", help="prompt counts to compare (small,large)")
    parser.add_argument("--batch-size", type=int, default=256, help="--prompt-batch-size")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.coco, args.child, args.batch_size, args.store)
        return
    sys.path.insert(0, str(ROOT))
    small, large = (int(s) for s in args.sizes.split(","))
    print(f"embed {args.coco.name} with the demo model, batch {args.batch_size}, one fresh process per size")
    results = {n: measure(args.coco, n, args.batch_size) for n in (small, large)}
    for n, (peak, rise, seconds, stored) in results.items():
        print(f"  {n:>6} prompts: peak RSS {peak:7.1f} MiB (+{rise:6.1f} over the imports)  {seconds:6.1f} s  "
              f"({stored} stored)")
    ratio = results[large][0] / results[small][0]
    verdict = "meets" if ratio <= 1.2 else "MISSES"
    print(f"peak RSS ratio {large}/{small}: {ratio:.3f} ({verdict} the <= 1.2 target); "
          f"prompts ratio {large / small:.0f}x")


if __name__ == "__main__":
    main()
