"""Transformer time with vs without caching, against what the MAC count promises ("efficiency").

Model: PixArt architecture with random weights, 8 blocks, hidden 384 (6 heads x 64), 32x32
latents (256 tokens), 120 text tokens, CFG batch of 2 (one image), 20 steps, fp32 on the CPU,
one torch thread. Only the transformer calls of a denoising loop are timed (no text encoder,
VAE or scheduler), in CPU time of this process (`time.process_time`): on a CPU shared with
other jobs wall-clock time mostly measures their load. Each configuration has its own copy of
the weights and the configurations advance step by step in turn (order rotated every step),
so bursts of load from other processes hit them alike; `--repeats` loops are averaged.

efficiency = (time uncached / time cached) / (MACs uncached / MACs cached)

The uncached time is the stock transformer's (no hooks); the all-recompute schedule's row
shows what the hooks themselves cost.

MAC ratios are shown both in ECAD's convention (linears only) and with the attention score /
value products, which caching skips too; efficiency uses the latter (what the CPU executes).
Run: PYTHONPATH=. python benchmarks/cache_speedup.py [--repeats 2] [--steps 20] [--blocks 8]
On a GPU (wall-clock with CUDA synchronisation instead of CPU time), PixArt-XL-2 size:
  python benchmarks/cache_speedup.py --device cuda --dtype fp16 --blocks 28 --heads 16 \
      --head-dim 72 --caption-channels 4096 --images 16
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import ecad_ray  # noqa: F401  (torchvision shim before diffusers)
import torch

from ecad_ray.caching import apply_schedule, load_schedule, schedule_mac_report, spec_from_transformer
from ecad_ray.caching.baselines import default_schedule, every_schedule, fora_schedule, tgate_schedule
from ecad_ray.caching.schedule import make_schedule
from ecad_ray.caching.testing import tiny_pixart_transformer
from ecad_ray.models.families import family_named

ECAD_FAST = "schedules/schedules_in_paper/pixart_alpha_256/ours_fast.json"
ECAD_FASTEST = "schedules/schedules_in_paper/pixart_alpha_256/ours_fastest.json"


def squeeze_blocks(path: str, blocks: int, steps: int):
    """A published 28-block schedule on `blocks` evenly spaced blocks (keeps its step pattern)."""
    real = load_schedule(path)
    picks = [round(i * (real.num_blocks - 1) / max(blocks - 1, 1)) for i in range(blocks)]
    components = family_named(real.family).components_of
    bits = {s: {str(i): {c: real.recompute(s, str(b), c) for c in components(str(b))}
                for i, b in enumerate(picks)} for s in range(steps)}
    return make_schedule(f"{real.name}[{blocks} blocks]", bits, blocks, steps)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


@torch.inference_mode()
def denoise_interleaved(models: dict, inputs, steps: int) -> dict[str, float]:
    """One CFG denoising loop per model, run step by step in turn; seconds in each transformer.

    Step i of every configuration runs back to back (in an order rotated each step), so a
    burst of load from other processes lands on all of them alike.
    """
    latents0, embeds, mask = inputs
    device = latents0.device
    latents = {name: latents0.clone() for name in models}
    spent = dict.fromkeys(models, 0.0)
    names = list(models)
    for i in range(steps):
        t = torch.tensor([999 - i * (999 // steps)], device=device).expand(2 * latents0.shape[0])
        for name in names[i % len(names):] + names[: i % len(names)]:
            x = torch.cat([latents[name], latents[name]])
            start = _clock(device)
            out = models[name](x, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=t,
                               added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
            spent[name] += _clock(device) - start
            uncond, cond = out[:, :4].chunk(2)
            latents[name] = latents[name] - (uncond + 4.5 * (cond - uncond)) / steps
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="interleaved denoising loops per configuration")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--caption-channels", type=int, default=1024)
    parser.add_argument("--images", type=int, default=1, help="images per call (the CFG batch is twice that)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    model = tiny_pixart_transformer(num_layers=args.blocks, heads=args.heads, head_dim=args.head_dim, sample_size=32,
                                    caption_channels=args.caption_channels)
    if device.type != "cpu" or dtype != torch.float32:
        model = model.to(device, dtype)
    g = torch.Generator().manual_seed(0)
    b = args.images
    inputs = tuple(v.to(device, dtype) for v in (
        torch.randn(b, 4, 32, 32, generator=g), torch.randn(2 * b, 120, args.caption_channels, generator=g),
        torch.ones(2 * b, 120)))
    spec = spec_from_transformer(model, text_len=120)
    n = args.steps
    schedules = [
        default_schedule(spec, n),
        fora_schedule(spec, n, 2),
        fora_schedule(spec, n, 3),
        every_schedule(spec, n, {"attn1": 2, "attn2": 4, "ff": 2}),
        tgate_schedule(spec, n, gate_step=n // 2, sp_interval=3),
        squeeze_blocks(ECAD_FAST, args.blocks, n),
        squeeze_blocks(ECAD_FASTEST, args.blocks, n),
    ]
    models = {"(no hooks)": model}
    handles = []
    for schedule in schedules:  # one copy of the weights per configuration, hooks applied once
        models[schedule.name] = copy.deepcopy(model)
        handles.append(apply_schedule(models[schedule.name], schedule, cfg=True))
    denoise_interleaved(models, inputs, 2)  # warm-up: allocator, kernels
    for handle in handles:
        handle.reset()
    totals = dict.fromkeys(models, 0.0)
    for _ in range(args.repeats):
        for name, seconds in denoise_interleaved(models, inputs, n).items():
            totals[name] += seconds / args.repeats
    base, hooked = totals["(no hooks)"], totals["default"]
    clock = "s wall (CUDA)" if device.type == "cuda" else "s CPU"
    print(f"PixArt-like transformer: {args.blocks} blocks, hidden {args.heads * args.head_dim}, 256 tokens, "
          f"CFG batch {2 * b}, {n} steps, {args.dtype} on {device}, mean of {args.repeats} interleaved rounds")
    print(f"uncached: {base:.3f} {clock} per loop without hooks, {hooked:.3f} with all-recompute hooks")
    print(f"{'schedule':52s} {'time s':>7s} {'speedup':>8s} {'MAC ratio':>10s} {'(ECAD conv.)':>12s} {'efficiency':>10s}")
    efficiencies = []
    for schedule in schedules:
        t = totals[schedule.name]
        full = schedule_mac_report(schedule, spec, attention_products=True)
        ecad = schedule_mac_report(schedule, spec)
        ideal = 1 / full.ratio
        eff = (base / t) / ideal
        if schedule.name != "default":
            efficiencies.append(eff)
        print(f"{schedule.name:52s} {t:7.3f} {base / t:7.2f}x {ideal:9.2f}x {1 / ecad.ratio:11.2f}x {eff:10.3f}")
    print(f"mean efficiency over cached schedules: {statistics.mean(efficiencies):.3f} (target >= 0.85)")


if __name__ == "__main__":
    main()
