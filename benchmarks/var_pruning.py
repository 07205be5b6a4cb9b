"""VAR per-scale pruning: FLOPs share per scale, wall-time speedup vs the FLOPs ideal, and
quality (judge accuracy on held-out captions; PSNR / SSIM / LPIPS to the unpruned images),
side by side in one run.

Speed is measured on a benchmark-sized random-weight model (`random:benchmark`: VAR-256's
ten scales 1..16, 8 layers of width 512, 4096-entry codebook) so the transformer is compute
bound on a CPU; the tiny demo model would mostly measure Python overheads. Quality is
measured on the trained `demo-var` text-to-image shapes model (random weights make noise
images, whose distances mean little): the demo's judge reads colour and shape back from
images of the held-out captions (prompts/demo_heldout.txt, never trained on), exactly as
caching is judged on the DiT demo; a class-conditional model (`demo-var-digits`) gets the
pairwise distances only. The same settings are applied to both by position from the last
scale:

    seed tail        the seed tool's default: last six scales 0.3, 0.4, skip, skip, 0.8, skip
    fastvar-like     FastVAR's Infinity default by position: last four 0.4, 0.5, skip, skip
    prune-last-3     token pruning only, no skips: last three scales at 0.5

Batch 16 (32 rows with CFG) keeps even the 1-token first scale near compute bound; at batch
1-2 reading the weights at every small scale dominates and the FLOPs ideal is out of reach.

Infinity (`--model infinity-tiny|infinity-2b|random:infinity-2b`) gets its own short report instead:
the FLOPs share per scale, unpruned and at FastVAR's setting (32:0.4, 40:0.5, 48 and 64 skipped on
the 1024-px schedule: the last four scales by position), and, when weights can be built there
(`infinity-tiny`; `infinity-2b` times random weights of its size, meant for a GPU), the measured
transformer speedup against the FLOPs ideal (random text states of 32 tokens, Infinity's sampling):
    python benchmarks/var_pruning.py --model infinity-2b --device cuda --batch 1 --repeats 3

Run: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/var_pruning.py [--repeats 3 --batch 16]
On a GPU (the speed runs on CUDA, each scale's time with CUDA synchronisation; quality stays on
the CPU), VAR-d16 size: python benchmarks/var_pruning.py --device cuda --speed-model random:var-d16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import ecad_ray.errors  # (importing ecad_ray first: torchvision shim before lpips)
from ecad_ray.var.checkpoints import load_var_model
from ecad_ray.var.controllers import NoPruning, TailPattern, describe
from ecad_ray import judge
from ecad_ray.metrics.pairwise import LpipsScorer, psnr, ssim
from ecad_ray.shapes import heldout_captions
from ecad_ray.var.pruning import transformer_flops

SETTINGS = {
    "unpruned": NoPruning(),
    "seed tail": TailPattern(),
    "fastvar-like": TailPattern((0.4, 0.5, 1.0, 1.0)),
    "prune-last-3": TailPattern((0.5, 0.5, 0.5)),
}


def flops_for(pipe, controller) -> list[float]:
    n = len(pipe.patch_nums)
    ratios = [controller.ratio(i, n, None) for i in range(n)]
    vq = pipe.config.vqvae
    return transformer_flops(pipe.config.var, vq.vocab_size, vq.z_channels, ratios, pipe.layer_range)


def synchronize_scales(pipe) -> None:
    """On CUDA, end each scale with a device synchronisation, so its recorded seconds (taken on
    the host) cover the kernels it queued rather than only their launches."""
    run_scale = pipe._run_scale

    def synced(*args, **kwargs):
        record = run_scale(*args, **kwargs)
        torch.cuda.synchronize(pipe.device)
        return record

    pipe._run_scale = synced


def _sync(pipe) -> None:
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)


def time_settings(pipe, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    """Best-of-N transformer and end-to-end seconds per image, settings interleaved each round.

    The minimum is reported because on a shared machine interference only ever adds time."""
    cond = pipe.conditions(classes=list(range(batch)))
    seeds = list(range(batch))
    pipe.generate(cond, seeds)  # warm-up (allocations, kernels)
    times = {name: {"transformer": [], "total": []} for name in SETTINGS}
    for _ in range(repeats):
        for name, ctrl in SETTINGS.items():
            _sync(pipe)
            t0 = time.perf_counter()
            result = pipe.generate(cond, seeds, ctrl)
            _sync(pipe)
            total = time.perf_counter() - t0
            times[name]["transformer"].append(result.transformer_seconds / batch)
            times[name]["total"].append(total / batch)
    out = {n: {k: min(v) for k, v in d.items()} for n, d in times.items()}
    for n, d in times.items():
        out[n]["spread"] = max(d["transformer"]) / min(d["transformer"]) - 1  # how noisy the machine was
    return out


def quality(pipe, n_images: int, lpips: LpipsScorer) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Per setting: judge accuracy (text models) and mean PSNR / SSIM / LPIPS to the unpruned
    images of the same conditions and seeds; and the images (uint8 NHWC)."""
    seeds = list(range(100, 100 + n_images))
    if pipe.config.var.cond == "text":
        captions = heldout_captions()
        prompts = [captions[i % len(captions)] for i in range(n_images)]
        cond = pipe.conditions(prompts=prompts)
    else:
        prompts = None
        cond = pipe.conditions(classes=[i % pipe.config.var.num_classes for i in range(n_images)])
    imgs = {}
    for name, ctrl in SETTINGS.items():
        imgs[name] = _uint8(pipe.generate(cond, seeds, ctrl).images_B3HW)
    ref = imgs["unpruned"]
    out = {}
    for name, cur in imgs.items():
        p = [psnr(a, b) for a, b in zip(cur, ref)]
        finite = [v for v in p if np.isfinite(v)]
        out[name] = {"psnr": float(np.mean(finite)) if finite else float("inf"),
                     "ssim": float(np.mean([ssim(a, b) for a, b in zip(cur, ref)])),
                     "lpips": float(np.mean(lpips(cur, ref))),
                     "colour": float("nan"), "shape": float("nan")}
        if prompts is not None:
            fid = judge.score(prompts, cur)
            out[name].update(colour=fid.colour, shape=fid.shape)
    return out, imgs


def _uint8(images_B3HW: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] as the uint8 BHWC arrays a run's PNGs hold (what the metrics score)."""
    return (images_B3HW.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per setting (the fastest is reported)")
    ap.add_argument("--batch", type=int, default=16, help="images per generate call in the speed runs")
    ap.add_argument("--quality-images", type=int, default=128, help="images per setting for quality (held-out captions, cycled)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--speed-model", default="random:benchmark", help="model for the speed runs")
    ap.add_argument("--quality-model", default="demo-var", help="model for the quality runs")
    ap.add_argument("--grid", type=Path, default=None, help="write a PNG: unpruned / seed tail / fastvar-like rows")
    ap.add_argument("--device", default="cpu", help="torch device of the speed runs (quality runs on the CPU)")
    ap.add_argument("--model", default=None, help="infinity-tiny | infinity-2b | random:infinity-2b: the Infinity report")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        return infinity_report(args)

    bench = load_var_model(args.speed_model, device=args.device)
    if bench.device.type == "cuda":
        synchronize_scales(bench)
    on = "" if bench.device.type == "cpu" else f", on {bench.device}"
    cfg = bench.config
    print(f"speed model {args.speed_model}: depth {cfg.var.depth}, width {cfg.var.embed_dim}, scales "
          f"{cfg.var.patch_nums} ({cfg.var.seq_len} tokens), vocab {cfg.vqvae.vocab_size}, CFG batch x2, "
          f"prune layers {bench.layer_range}, {args.threads} thread(s), batch {args.batch}{on}")
    full = flops_for(bench, NoPruning())
    total = sum(full)
    print("\nFLOPs share per scale (unpruned, transformer incl. head):")
    print("  width  tokens  GFLOPs  share  cumulative-from-last")
    tail_cum = np.cumsum(full[::-1])[::-1] / total
    for pn, f, cum in zip(cfg.var.patch_nums, full, tail_cum):
        print(f"  {pn:5d}  {pn * pn:6d}  {f / 1e9:6.2f}  {100 * f / total:4.1f}%  {100 * cum:5.1f}%")

    timings = time_settings(bench, args.batch, args.repeats)
    try:
        lpips, backbone = LpipsScorer(), "alex, ImageNet"
    except ecad_ray.errors.UserError:  # no backbone weights offline: distances still order the settings
        lpips, backbone = LpipsScorer(random_backbone=True), "random (no ImageNet weights here)"
    qual, images = quality(load_var_model(args.quality_model), args.quality_images, lpips)
    if args.grid:
        from ecad_ray.models.demo import save_grid

        rows = ["unpruned", "seed tail", "fastvar-like"]
        save_grid([images[r][:8] for r in rows], args.grid)
        print(f"grid -> {args.grid} (rows: {', '.join(rows)}; the first 8 held-out captions, same seeds)")

    base = timings["unpruned"]
    print(f"\nSpeed: {args.speed_model} (best of {args.repeats}, batch {args.batch}); quality: {args.quality_model}, "
          f"{args.quality_images} images vs its unpruned images (LPIPS backbone: {backbone}); judge accuracy "
          f"on held-out captions")
    head = (f"{'setting':13s} {'ratios (last scales)':32s} {'ideal x':>7s} {'meas x':>7s} {'gap':>6s} {'ok':>3s} "
            f"{'e2e x':>6s} {'s/img':>7s} {'spread':>6s} {'colour':>6s} {'shape':>6s} {'PSNR':>6s} {'SSIM':>6s} {'LPIPS':>6s}")
    print(head)
    print("-" * len(head))
    for name, ctrl in SETTINGS.items():
        ideal = total / sum(flops_for(bench, ctrl))
        meas = base["transformer"] / timings[name]["transformer"]
        e2e = base["total"] / timings[name]["total"]
        gap = meas / ideal - 1
        q = qual[name]
        print(f"{name:13s} {describe(ctrl):32s} {ideal:7.2f} {meas:7.2f} {100 * gap:5.1f}% {'yes' if abs(gap) <= 0.15 else 'no':>3s} "
              f"{e2e:6.2f} {timings[name]['total']:7.3f} {100 * timings[name]['spread']:5.0f}% {q['colour']:6.3f} {q['shape']:6.3f} {q['psnr']:6.2f} {q['ssim']:6.3f} {q['lpips']:6.3f}")
    print("\nideal x = transformer FLOPs unpruned / pruned; meas x = measured transformer time ratio; "
          "gap = meas/ideal - 1 (target |gap| <= 15%); e2e x includes VQ decode and Python overheads;\n"
          "s/img = best end-to-end seconds per image; spread = slowest/fastest transformer time - 1 over the rounds;\n"
          "colour / shape = the demo judge's accuracy against the captions (unpruned gate: colour >= 0.80, shape >= 0.70).")


FASTVAR = TailPattern((0.4, 0.5, 1.0, 1.0))  # 1M schedule: 32:0.4, 40:0.5, 48 and 64 skipped


def infinity_report(args) -> None:
    """FLOPs share per scale of an Infinity model, unpruned and FastVAR's setting, and the measured
    transformer speedup (best of --repeats) against the FLOPs ideal."""
    from ecad_ray.var.infinity.checkpoints import build_random, load_infinity_model
    from ecad_ray.var.infinity.config import preset
    from ecad_ray.var.infinity.flops import NOMINAL_TEXT_TOKENS, infinity_flops
    from ecad_ray.var.pruning import default_layer_range
    from ecad_ray.var.infinity.transformer import TextStates
    from ecad_ray.var.run import resolve_dtype

    name = args.model.removeprefix("random:")
    config = preset(name)
    t, n = config.transformer, len(config.transformer.scales)
    layer_range = default_layer_range(t.depth)
    ratios = [FASTVAR.ratio(i, n) for i in range(n)]
    full, fast = infinity_flops(config, [0.0] * n, layer_range), infinity_flops(config, ratios, layer_range)
    dtype = resolve_dtype("auto", args.device)
    print(f"{args.model}: depth {t.depth}, width {t.embed_dim}, {config.vae.codebook_dim}-bit codes, scales "
          f"{t.scales} ({t.seq_len} tokens), {config.image_size} px, prune layers {layer_range}, "
          f"CFG x2, text {NOMINAL_TEXT_TOKENS} tokens, {dtype}, {args.device}")
    print("\n  width  tokens   GFLOPs  share  cum-from-last  fastvar ratio  fastvar GFLOPs")
    cum = np.cumsum(full[::-1])[::-1] / sum(full)
    for w, f, c, r, p in zip(t.scales, full, cum, ratios, fast):
        print(f"  {w:5d}  {w * w:6d}  {f / 1e9:7.3f}  {100 * f / sum(full):4.1f}%  {100 * c:12.1f}%  {r:13g}  {p / 1e9:14.3f}")
    ideal = sum(full) / sum(fast)
    print(f"  total {sum(full) / 1e9:.3f} -> {sum(fast) / 1e9:.3f} GFLOPs: FLOPs share {sum(fast) / sum(full):.3f}, ideal x {ideal:.2f}")
    if name != "infinity-tiny" and not args.device.startswith("cuda"):
        print("(timing the 2B's size needs a GPU: --device cuda)")
        return
    pipe = (load_infinity_model(name, device=args.device) if name == "infinity-tiny"
            else build_random(config, device=args.device))  # the 2B's size with random weights
    pipe.dtype = dtype
    if pipe.device.type == "cuda":
        synchronize_scales(pipe)
    g = torch.Generator().manual_seed(0)
    text = TextStates(torch.randn(args.batch, NOMINAL_TEXT_TOKENS, t.text_channels, generator=g).to(pipe.device),
                      [NOMINAL_TEXT_TOKENS] * args.batch)
    seeds = list(range(args.batch))
    pipe.generate(text, seeds, FASTVAR)  # warm-up
    best = {}
    for _ in range(args.repeats):
        for label, ctrl in (("unpruned", NoPruning()), ("fastvar", FASTVAR)):
            _sync(pipe)
            result = pipe.generate(text, seeds, ctrl)
            best[label] = min(best.get(label, float("inf")), result.transformer_seconds / args.batch)
    meas = best["unpruned"] / best["fastvar"]
    gpu = torch.cuda.get_device_name(pipe.device) if pipe.device.type == "cuda" else "cpu"
    print(f"\ntransformer s/image (best of {args.repeats}, batch {args.batch}, {gpu}): unpruned {best['unpruned']:.3f}, "
          f"fastvar {best['fastvar']:.3f}; measured x {meas:.2f} vs ideal x {ideal:.2f} "
          f"(gap {100 * (meas / ideal - 1):+.1f}%, target within 15%: {'yes' if abs(meas / ideal - 1) <= 0.15 else 'no'})")


if __name__ == "__main__":
    main()
