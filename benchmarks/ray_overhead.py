"""What the Ray Data plan costs over a plain loop, and what a second worker buys.

Runs the same prompts through (1) a plain in-process loop over the same encoder/generator
objects and batch size, (2) `run_generate` with 1 worker × 1 thread, (3) with 2 workers ×
1 thread, each pipeline run starting and stopping its own local Ray (the default), and (4)
with 1 worker joining a Ray that is already running (`ray start --head` once, then
`--address`; timed on the second such run, as a user's repeated runs would see it).
Prints, side by side: steady-state throughput ratio pipeline/loop, fixed start-up seconds
(Ray start or connect + actor spawn + model load, until the first image, minus one batch of
compute), and the 2-worker/1-worker throughput ratio. Beside the start-up it prints the floor
this software stack sets on the machine: a fresh Ray running the same plan with an actor
that loads nothing, plus a new process importing torch and building the model.
Targets (2-core CPU): ratio >= 0.9 when one batch takes >= 1 s; start-up <= 10 s; 2w/1w >= 1.7.

    python benchmarks/ray_overhead.py --prompts 64 --batch-size 8 --size 64
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import ecad_ray  # noqa: E402,F401  (torchvision shim first)
import torch  # noqa: E402

from ecad_ray.config import GenerateConfig, ImageSettings  # noqa: E402
from ecad_ray.engine import ImageGenerator, TextEncoder  # noqa: E402
from ecad_ray.models.registry import resolve_model  # noqa: E402


def prompts(n: int) -> list[str]:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "cyan"]
    shapes = ["circle", "square", "triangle", "ring"]
    return [f"a {'small' if i % 2 else 'large'} {colours[i % 8]} {shapes[(i // 8) % 4]}" for i in range(n)]


def load_models(cfg: GenerateConfig) -> tuple[TextEncoder, ImageGenerator]:
    """The encoder and generator every run here uses, on the CPU."""
    model_spec = resolve_model(cfg.model)
    return TextEncoder(model_spec, "cpu"), ImageGenerator(model_spec, ImageSettings.resolve(cfg, model_spec), "cpu")


def plain_loop(cfg: GenerateConfig) -> dict:
    """Encode then generate batch by batch in this process; returns timings."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    encoder, generator = load_models(cfg)
    load = time.perf_counter() - t0
    texts = list(cfg.prompts)
    t1 = time.perf_counter()
    batch_times = []
    for start in range(0, len(texts), cfg.batch_size):
        chunk = texts[start : start + cfg.batch_size]
        b0 = time.perf_counter()
        emb = encoder(chunk, [""] * len(chunk))
        generator(emb, [0] * len(chunk))
        batch_times.append(time.perf_counter() - b0)
    total = time.perf_counter() - t1
    return {"load_s": load, "compute_s": total, "images": len(texts), "batch_s": sum(batch_times) / len(batch_times)}


def pipeline(cfg: GenerateConfig) -> dict:
    """`run_generate` in a fresh local Ray; start-up is the time until the first image arrives."""
    from actors.plan import run_generate

    marks: list[tuple[float, int]] = []  # (arrival time, images done) per finished batch
    t0 = time.perf_counter()
    run_generate(cfg, progress=lambda done, total: marks.append((time.perf_counter(), done)))
    total = time.perf_counter() - t0
    (first_t, first_n), (last_t, last_n) = marks[0], marks[-1]
    # steady state: everything after the first batch (which carries the start-up)
    return {"total_s": total, "first_image_s": first_t - t0, "steady_img_per_s": (last_n - first_n) / (last_t - first_t),
            "images": last_n}


class _Passthrough:
    """A Ray Data stage that loads nothing: what the plan costs before any model is involved."""

    def __call__(self, batch: dict) -> dict:
        return batch


def ray_data_floor(cfg: GenerateConfig) -> float:
    """Seconds until the first batch leaves the same plan shape (fresh local Ray, one-actor pool,
    one block per batch, prefetch 0) when the actor loads nothing."""
    import ray

    from actors.pipeline import quiet_ray_data
    from actors.plan import local_cpus, ray_session

    # the workers cannot import this script: send _Passthrough's code along with it
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    t0 = time.perf_counter()
    with ray_session(None, local_cpus(cfg)):
        quiet_ray_data()
        rows = [{"seed": i} for i in range(2 * cfg.batch_size)]
        ds = ray.data.from_items(rows, override_num_blocks=2).map_batches(
            _Passthrough, batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
        next(iter(ds.iter_batches(batch_size=None, prefetch_batches=0)))
        return time.perf_counter() - t0


def fresh_process_model_load(cfg: GenerateConfig) -> float:
    """Seconds a new Python process takes to import torch and the model code and build the models
    (this script's own imports, then `load_models`)."""
    code = (
        "import sys, time; t = time.perf_counter(); sys.path.insert(0, sys.argv[1]); import ray_overhead as b\n"
        "from ecad_ray.config import GenerateConfig\n"
        "b.torch.set_num_threads(1)\n"
        "b.load_models(GenerateConfig(model=sys.argv[2], height=int(sys.argv[3]), width=int(sys.argv[4]), steps=int(sys.argv[5])))\n"
        "print(time.perf_counter() - t)"
    )
    args = [str(Path(__file__).resolve().parent), cfg.model, str(cfg.height), str(cfg.width), str(cfg.steps)]
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def pipeline_on_running_ray(cfg: GenerateConfig) -> dict:
    """Start a private local head the way a user would (`ray start --head`), time the second
    run that joins it, then stop it (only it: other Ray instances on the machine are left alone)."""
    from actors.plan import CLUSTER_MODE_ENV

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, CLUSTER_MODE_ENV: "0"},  # a one-machine head: its servers on loopback only
    )
    try:
        _wait_for_port(port, head)
        joined = replace(cfg, address=f"127.0.0.1:{port}")
        # two batches are enough for the first run to leave Ray Data's detached helper actors behind
        pipeline(replace(joined, output_dir=cfg.output_dir + "-first", prompts=cfg.prompts[:2 * cfg.batch_size]))
        return pipeline(joined)
    finally:
        head.terminate()  # `ray start --block` stops the processes it started when it exits
        head.wait(timeout=120)
        # ...but leaves its address as "the latest cluster" for later ray.init() calls to find
        from ray._common.utils import get_ray_address_file

        latest = Path(get_ray_address_file(None))
        if latest.is_file() and latest.read_text().strip().endswith(f":{port}"):
            latest.unlink()


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"`ray start --head` did not listen on port {port} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image height = width (demo accepts multiples of 4)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    texts = tuple(prompts(args.prompts))

    def cfg(out: str, workers: int) -> GenerateConfig:
        return GenerateConfig(model="demo", output_dir=out, prompts=texts, batch_size=args.batch_size,
                              height=args.size, width=args.size, steps=args.steps, num_workers=workers,
                              device="cpu")

    with tempfile.TemporaryDirectory() as tmp:
        loop = plain_loop(cfg(tmp + "/loop", 1))
        one = pipeline(cfg(tmp + "/w1", 1))
        two = pipeline(cfg(tmp + "/w2", 2))
        joined = pipeline_on_running_ray(cfg(tmp + "/joined", 1))
        floor_ray = ray_data_floor(cfg(tmp + "/floor", 1))
        floor_load = fresh_process_model_load(cfg(tmp + "/floor", 1))
    loop_rate = loop["images"] / loop["compute_s"]
    print(f"{'run':<26}{'images/s':>10}{'first image s':>15}{'total s':>10}")
    print(f"{'plain loop (1 thread)':<26}{loop_rate:>10.2f}{loop['load_s'] + loop['batch_s']:>15.2f}"
          f"{loop['load_s'] + loop['compute_s']:>10.2f}")
    runs = (("generate 1 worker x 1 thr", one), ("generate 2 workers x 1 thr", two),
            ("1 worker, Ray running", joined))
    for name, r in runs:
        print(f"{name:<26}{r['steady_img_per_s']:>10.2f}{r['first_image_s']:>15.2f}{r['total_s']:>10.2f}")
    print()
    print(f"one batch of {args.batch_size} = {loop['batch_s']:.2f} s of compute ({args.size}x{args.size}, {args.steps} steps)")
    print(f"throughput ratio generate(1w)/loop     = {one['steady_img_per_s'] / loop_rate:.2f}   (target >= 0.9)")
    print(f"fixed start-up seconds (Ray+actors+load) = {one['first_image_s'] - loop['batch_s']:.1f}   (target <= 10)")
    print(f"  the same, joining a running Ray        = {joined['first_image_s'] - loop['batch_s']:.1f}")
    print(f"  of either, model load alone (the loop's, torch already imported) = {loop['load_s']:.1f}")
    print(f"  floor of this stack, no contention     = {floor_ray + floor_load:.1f}   (Ray + Ray Data with an"
          f" empty actor {floor_ray:.1f} s, then torch import + model build in a new process {floor_load:.1f} s)")
    print(f"2 workers / 1 worker throughput          = {two['steady_img_per_s'] / one['steady_img_per_s']:.2f}   (target >= 1.7)")


if __name__ == "__main__":
    main()
