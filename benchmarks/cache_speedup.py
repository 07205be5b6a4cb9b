"""Transformer time with vs without caching, against what the MAC count promises ("efficiency").

Model: PixArt architecture with random weights, 8 blocks, hidden 384 (6 heads x 64), 32x32
latents (256 tokens), 120 text tokens, CFG batch of 2 (one image), 20 steps, fp32 on the CPU,
one torch thread. Only the transformer calls of a denoising loop are timed (no text encoder,
VAE or scheduler), in CPU time of this process (`time.process_time`): on a CPU shared with
other jobs wall-clock time mostly measures their load. Configurations are timed round-robin
(`--repeats` rounds, the fastest kept: contention only ever adds time) after a short warm-up.

efficiency = (time uncached / time cached) / (MACs uncached / MACs cached)

The uncached time is the faster of the stock transformer and the all-recompute schedule
(identical work; hooks cost ~nothing), so noise cannot inflate efficiency through it.

MAC ratios are shown both in ECAD's convention (linears only) and with the attention score /
value products, which caching skips too; efficiency uses the latter (what the CPU executes).
Run: PYTHONPATH=. python benchmarks/cache_speedup.py [--repeats 3] [--steps 20] [--blocks 8]
On a GPU (wall-clock with CUDA synchronisation instead of CPU time), PixArt-XL-2 size:
  python benchmarks/cache_speedup.py --device cuda --dtype fp16 --blocks 28 --heads 16 \
      --head-dim 72 --caption-channels 4096 --images 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import ecad_ray  # noqa: F401  (torchvision shim before diffusers)
import torch

from ecad_ray.caching import apply_schedule, load_schedule, schedule_mac_report, spec_from_transformer
from ecad_ray.caching.baselines import default_schedule, every_schedule, fora_schedule, tgate_schedule
from ecad_ray.caching.schedule import make_schedule
from ecad_ray.caching.testing import tiny_pixart_transformer

ECAD_FAST = "schedules/schedules_in_paper/pixart_alpha_256/ours_fast.json"
ECAD_FASTEST = "schedules/schedules_in_paper/pixart_alpha_256/ours_fastest.json"


def squeeze_blocks(path: str, blocks: int, steps: int):
    """A published 28-block schedule on `blocks` evenly spaced blocks (keeps its step pattern)."""
    real = load_schedule(path)
    picks = [round(i * (real.num_blocks - 1) / max(blocks - 1, 1)) for i in range(blocks)]
    bits = {s: {str(i): {c: real.recompute(s, str(b), c) for c in ("attn1", "attn2", "ff")}
                for i, b in enumerate(picks)} for s in range(steps)}
    return make_schedule(f"{real.name}[{blocks} blocks]", bits, blocks, steps)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


@torch.inference_mode()
def denoise(model, inputs, steps: int) -> float:
    """Seconds spent in the transformer over one CFG denoising loop."""
    latents, embeds, mask = inputs
    device = latents.device
    spent = 0.0
    for i in range(steps):
        x = torch.cat([latents, latents])
        t = torch.tensor([999 - i * (999 // steps)], device=device).expand(x.shape[0])
        start = _clock(device)
        out = model(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=t,
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        spent += _clock(device) - start
        uncond, cond = out[:, :4].chunk(2)
        latents = latents - (uncond + 4.5 * (cond - uncond)) / steps
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per configuration (fastest kept)")
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
    denoise(model, inputs, 5)  # warm-up: allocator, kernels
    configs: list = [None, *schedules]  # None: the stock transformer, no hooks
    times: dict[str, list[float]] = {"(no hooks)": [], **{s.name: [] for s in schedules}}
    for r in range(args.repeats):
        for schedule in configs[r % len(configs):] + configs[: r % len(configs)]:  # rotate the order
            if schedule is None:
                times["(no hooks)"].append(denoise(model, inputs, n))
                continue
            with apply_schedule(model, schedule, cfg=True):
                times[schedule.name].append(denoise(model, inputs, n))
    stock, hooked = min(times["(no hooks)"]), min(times["default"])
    base = min(stock, hooked)  # same work either way; the faster keeps efficiency conservative
    clock = "s wall (CUDA)" if device.type == "cuda" else "s CPU"
    print(f"PixArt-like transformer: {args.blocks} blocks, hidden {args.heads * args.head_dim}, 256 tokens, "
          f"CFG batch {2 * b}, {n} steps, {args.dtype} on {device}, {args.repeats} rounds (fastest)")
    print(f"uncached: {stock:.3f} {clock} per loop without hooks, {hooked:.3f} with all-recompute hooks; "
          f"reference {base:.3f} s")
    print(f"{'schedule':52s} {'time s':>7s} {'speedup':>8s} {'MAC ratio':>10s} {'(ECAD conv.)':>12s} {'efficiency':>10s}")
    efficiencies = []
    for schedule in schedules:
        t = min(times[schedule.name])
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
