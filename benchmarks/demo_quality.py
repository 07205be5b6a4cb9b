"""Demo model quality: judge accuracy on held-out captions and judge-feature FID, side by side.

    PYTHONPATH=. python benchmarks/demo_quality.py [--captions 64] [--seeds 4] [--grid docs/images/demo_samples.png]

FID is computed on the judge's 256-d features (clean-fid's Fréchet distance) between images
generated for the held-out captions and real images drawn for the same captions; the same
distance between two real draws (other seeds) is printed as the floor this sample size allows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


import ecad_ray  # noqa: F401  (patches torchvision before diffusers loads)


def main() -> None:
    """Generate, score, compute FID, optionally write the sample grid."""
    import torch

    from ecad_ray.judge import features, frechet_distance, score
    from ecad_ray.models.demo import WEIGHTS_PATH, build_pipeline, sample_images, save_grid
    from ecad_ray.shapes import heldout_captions, render_captions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=64, help="held-out captions to use")
    parser.add_argument("--seeds", type=int, default=4, help="images per caption")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=Path, default=None, help="write demo prompts: real row / generated row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    heldout = heldout_captions(args.captions)
    captions = [c for _ in range(args.seeds) for c in heldout]
    pipe = build_pipeline(weights=args.weights)
    t = time.time()
    generated = sample_images(pipe, captions, seed=1000, batch_size=32)
    per_image = (time.time() - t) / len(captions)
    fid = score(captions, generated)
    real_a = render_captions(captions, seed=1).images
    real_b = render_captions(captions, seed=2).images
    real_fid = score(captions, real_a)
    fa, fb, fg = features(real_a), features(real_b), features(generated)
    print(f"{len(captions)} images ({len(heldout)} held-out captions x {args.seeds} seeds), "
          f"{per_image * 1000:.0f} ms/image (20 DPM-Solver steps, CFG, batch 32, {args.threads} thread(s))")
    print(f"{'':<22} {'colour':>7} {'shape':>7} {'position':>8} {'size':>6} {'FID vs real':>12}")
    print(f"{'generated':<22} {fid.colour:>7.1%} {fid.shape:>7.1%} {fid.position:>8.1%} {fid.size:>6.1%} "
          f"{frechet_distance(fg, fa):>12.2f}")
    print(f"{'real (other draw)':<22} {real_fid.colour:>7.1%} {real_fid.shape:>7.1%} {real_fid.position:>8.1%} "
          f"{real_fid.size:>6.1%} {frechet_distance(fb, fa):>12.2f}")
    if args.grid:
        demo_prompts = Path(__file__).resolve().parents[1] / "prompts" / "demo.txt"
        prompts = [x for x in demo_prompts.read_text().splitlines() if x][:8]
        save_grid([render_captions(prompts, seed=5).images, sample_images(pipe, prompts, seed=7)], args.grid)
        print(f"grid -> {args.grid} (top: real, bottom: generated) for: " + " | ".join(prompts))


if __name__ == "__main__":
    main()
