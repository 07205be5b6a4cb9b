"""Peak bytes of cached sub-layer outputs: ours (liveness) vs ECAD's keep-every-last-output.

Analytic, from the shipped PixArt-XL-2 / FLUX.1-dev shapes at 256x256: the same event
simulation the hooks follow (tests check the hooks' measured peak equals it on tiny models).
Sizes are for the dtype ECAD ran (fp16 PixArt, bf16 FLUX: 2 bytes) and two batches: one image
(PixArt's CFG pair = 2 samples, FLUX 1) and the batch ECAD timed with (`metrics.latency`).
"Mean" is the bytes held at the end of a step averaged over the steps (ECAD holds its full
cache from step 0 on). Run: PYTHONPATH=. python benchmarks/cache_memory.py
"""

from __future__ import annotations

from pathlib import Path

import ecad_ray  # noqa: F401
from ecad_ray.caching import cache_memory, load_schedule, shipped_spec
from ecad_ray.models.families import family_named

ROOT = Path(__file__).resolve().parents[1] / "schedules"
FILES = [
    "alpha_cache_schedules/gen_default/default.json",
    "schedules_in_paper/pixart_alpha_256/ours_fast.json",
    "schedules_in_paper/pixart_alpha_256/ours_faster.json",
    "schedules_in_paper/pixart_alpha_256/ours_fastest.json",
    "schedules_in_paper/pixart_sigma_256/ours_fast.json",
    "alpha_cache_schedules/gen_recompute_all_every_n/recompute_all_every_003.json",
    "alpha_cache_schedules/gen_tgate/tgate_m_010_sp_003_fi_001_warmup_002.json",
    "alpha_cache_schedules/gen_tgate/tgate_m_015_sp_005_fi_001_warmup_002.json",
    "schedules_in_paper/flux_256/ours_fast.json",
    "schedules_in_paper/flux_256/ours_faster.json",
    "flux_cache_schedules/gen_recompute_all_every_n/recompute_all_every_003.json",
]


def mib(n: float) -> str:
    return f"{n / 2**20:9.1f}"


def main() -> None:
    print("cache bytes, analytic (MiB); ours = liveness, ECAD = every sub-layer's last output kept")
    print(f"{'schedule':64s} {'batch':>5s} {'ours peak':>9s} {'ours mean':>9s} {'ECAD':>9s} {'peak/ECAD':>9s} {'mean/ECAD':>9s}")
    for rel in FILES:
        schedule = load_schedule(ROOT / rel)
        family = family_named(schedule.family)
        cfg = family.uses_negative_prompt  # a CFG pair per image (PixArt); FLUX embeds guidance
        spec = shipped_spec(family.reference_model)
        per_image = 2 if cfg else 1
        timed = ((schedule.metrics or {}).get("latency") or {}).get("batch_size")
        for batch in sorted({per_image, per_image * timed} if timed else {per_image}):
            r = cache_memory(schedule, spec, batch=batch, bytes_per_element=2, cfg=cfg)
            print(f"{rel:64s} {batch:5d} {mib(r.peak_bytes)} {mib(r.mean_bytes)} {mib(r.keep_all_bytes)} "
                  f"{r.ratio:9.3f} {r.mean_bytes / r.keep_all_bytes:9.3f}")


if __name__ == "__main__":
    main()
