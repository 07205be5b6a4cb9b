"""Does layer caching behave on the trained demo model as it does on real DiTs?

    PYTHONPATH=. python benchmarks/demo_caching.py [--captions 64] [--seeds 2] [--grid docs/images/demo_caching_grid.png]

Prints, in one run:
1. adjacent-step similarity of every block's attn1 / attn2 / ff output over the 20 DPM-Solver
   steps (cosine similarity and relative change between step s-1 and s, as in FORA/ECAD's
   motivation);
2. judge accuracy on held-out captions with full compute vs a FORA-style schedule that
   recomputes every sub-layer every 2nd step and reuses the cached output in between;
3. optionally an image grid: full compute (top row) vs cached (bottom row).

The cached run applies `ecad_ray.caching`'s FORA baseline (`fora_schedule` + `apply_schedule`),
the same hooks `ecad-ray generate --schedule` uses.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import ecad_ray  # noqa: F401  (patches torchvision before diffusers loads)
from ecad_ray.caching import apply_schedule, spec_from_transformer
from ecad_ray.caching.baselines import fora_schedule
from ecad_ray.models import demo

SUBLAYERS = demo.FAMILY.components_of("0")  # attn1, attn2, ff: every demo block has the same three


def _sublayers(transformer):
    """(block index, sub-layer name, module) for every cacheable sub-layer."""
    for (block, name), module in demo.FAMILY.sublayer_modules(transformer).items():
        yield int(block), name, module


@contextmanager
def record_sublayer_outputs(transformer):
    """Collect each sub-layer's output at every step: {(block, name): [tensor per step]}."""
    outputs: dict[tuple[int, str], list] = {}
    handles = []
    for i, name, module in _sublayers(transformer):
        store = outputs.setdefault((i, name), [])
        handles.append(module.register_forward_hook(lambda m, a, out, store=store: store.append(out.detach().clone())))
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def fora_cache(pipe, interval: int = 2):
    """The pipeline's transformer under FORA recompute-every-`interval`, for the `with` block.

    Each pipeline call is one run: the hooks restart at step 0 when the scheduler sets its timesteps.
    """
    cfg = demo.demo_config()
    spec = spec_from_transformer(pipe.transformer, cfg["image_size"], cfg["image_size"], cfg["max_sequence_length"])
    with apply_schedule(pipe, fora_schedule(spec, cfg["num_inference_steps"], interval)) as handle:
        print(f"(using ecad_ray.caching: {type(handle).__name__})")
        yield handle


def adjacent_similarity(outputs) -> dict[str, np.ndarray]:
    """Per sub-layer kind: [step-1 x block] mean cosine similarity and relative L2 change."""
    import torch

    n_blocks = 1 + max(i for i, _ in outputs)
    result = {}
    for name in SUBLAYERS:
        cos, rel = [], []
        for i in range(n_blocks):
            steps = outputs[(i, name)]
            c_row, r_row = [], []
            for prev, cur in zip(steps, steps[1:]):
                a, b = prev.flatten(1).double(), cur.flatten(1).double()
                c_row.append(float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean()))
                r_row.append(float(((b - a).norm(dim=1) / a.norm(dim=1)).mean()))
            cos.append(c_row)
            rel.append(r_row)
        result[f"{name}_cos"] = np.array(cos).T
        result[f"{name}_rel"] = np.array(rel).T
    return result


def main() -> None:
    """Measure similarity, accuracy full vs cached, time, and optionally write the grid."""
    import torch

    from ecad_ray.judge import score
    from ecad_ray.models.demo import WEIGHTS_PATH, build_pipeline, sample_images, save_grid
    from ecad_ray.shapes import heldout_captions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=64, help="held-out captions to score")
    parser.add_argument("--seeds", type=int, default=2, help="images per caption")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=Path, default=None, help="write full (top) vs cached (bottom) grid")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    heldout = heldout_captions(args.captions)
    captions = [c for _ in range(args.seeds) for c in heldout]
    pipe = build_pipeline(weights=args.weights)

    with record_sublayer_outputs(pipe.transformer) as outputs:
        sample_images(pipe, heldout[:16], seed=0, batch_size=16)
    sim = adjacent_similarity(outputs)
    print("adjacent-step similarity of sub-layer outputs (16 images, mean over blocks):")
    print(f"{'step':>4} " + " ".join(f"{n + ' cos':>10} {n + ' rel':>10}" for n in SUBLAYERS))
    for s in range(sim["attn1_cos"].shape[0]):
        print(f"{s + 1:>4} " + " ".join(f"{sim[n + '_cos'][s].mean():>10.3f} {sim[n + '_rel'][s].mean():>10.3f}" for n in SUBLAYERS))
    print("mean " + " ".join(f"{sim[n + '_cos'].mean():>10.3f} {sim[n + '_rel'].mean():>10.3f}" for n in SUBLAYERS))

    t = time.time()
    full = sample_images(pipe, captions, seed=500, batch_size=32)
    t_full = (time.time() - t) / len(captions)
    with fora_cache(pipe, 2):
        t = time.time()
        cached = sample_images(pipe, captions, seed=500, batch_size=32)  # the same images' seeds as `full`
        t_cached = (time.time() - t) / len(captions)
    a, b = score(captions, full), score(captions, cached)
    print(f"\n{len(captions)} images ({len(heldout)} held-out captions x {args.seeds} seeds), {args.threads} thread(s)")
    print(f"{'':<24} {'colour':>7} {'shape':>7} {'position':>8} {'ms/image':>9}")
    print(f"{'full compute':<24} {a.colour:>7.1%} {a.shape:>7.1%} {a.position:>8.1%} {t_full * 1000:>9.0f}")
    print(f"{'FORA recompute-every-2':<24} {b.colour:>7.1%} {b.shape:>7.1%} {b.position:>8.1%} {t_cached * 1000:>9.0f}")
    print(f"{'difference (points)':<24} {100 * (b.colour - a.colour):>+7.1f} {100 * (b.shape - a.shape):>+7.1f} "
          f"{100 * (b.position - a.position):>+8.1f}")
    diff = np.abs(full.astype(int) - cached.astype(int))
    print(f"mean |full - cached| pixel difference: {diff.mean():.2f} grey levels")
    if args.grid:
        prompts = [x for x in Path("prompts/demo.txt").read_text().splitlines() if x][:8]
        top = sample_images(pipe, prompts, seed=7)
        with fora_cache(pipe, 2):
            bottom = sample_images(pipe, prompts, seed=7, batch_size=len(prompts))
        save_grid([top, bottom], args.grid)
        print(f"grid -> {args.grid} (top: full compute, bottom: recompute every 2nd step) for: " + " | ".join(prompts))


if __name__ == "__main__":
    main()
