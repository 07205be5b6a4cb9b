"""`generate` end to end on the built-in demo model through a real local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from actors.plan import run_generate
from ecad_ray.config import GenerateConfig
from ecad_ray.embeddings import EmbeddingStore
from ecad_ray.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("a small red circle above a blue square", "a large green triangle", "a yellow square")


def config(tmp: Path, **kw) -> GenerateConfig:
    base = dict(model="demo", output_dir=str(tmp), prompts=PROMPTS, steps=4, num_images_per_prompt=2)
    base.update(kw)
    return GenerateConfig(**base)


def pixels(run_dir: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((run_dir / "images").glob("*.png"))}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("base")
    summary = run_generate(config(out, batch_size=8))
    return out, summary


def test_run_writes_images_table_embeddings_and_run_json(base_run):
    out, summary = base_run
    assert summary.new_images == 6
    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 6
    assert set(table.column_names) >= {
        "prompt_id", "prompt", "seed", "model", "schedule", "height", "width", "steps",
        "guidance_scale", "image_path", "seconds_per_image",
    }
    rows = table.to_pylist()
    assert {(r["prompt_id"], r["seed"]) for r in rows} == {(str(i), s) for i in range(3) for s in (0, 1)}
    for r in rows:
        assert (out / r["image_path"]).is_file()
        assert r["model"] == "demo" and r["schedule"] == "none" and r["steps"] == 4
    assert (out / "images" / "000__prompt_id:0__image_seed:001.png").is_file()
    index = EmbeddingStore(out / "embeddings").index()
    assert sorted(index.column("prompt").to_pylist()) == sorted(PROMPTS)
    assert set(index.column("model").to_pylist()) == {"demo"}
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["settings"]["height"] == 32
    assert "torch" in run["versions"] and run["device"]
    assert 0 < run["wall_seconds"] and run["wall_seconds"] == pytest.approx(summary.wall_seconds, abs=1.0)


def test_images_do_not_depend_on_batch_size_or_workers(base_run, tmp_path):
    out8, _ = base_run
    run_generate(config(tmp_path / "b1", batch_size=1))
    run_generate(config(tmp_path / "w2", batch_size=3, num_workers=2))
    ref = pixels(out8)
    assert len(ref) == 6
    for other in ("b1", "w2"):
        got = pixels(tmp_path / other)
        assert got.keys() == ref.keys()
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{other}/{name}")
    # different seeds do give different images (the comparison above is not vacuous)
    assert not np.array_equal(ref["000__prompt_id:0__image_seed:000.png"], ref["000__prompt_id:0__image_seed:001.png"])


def test_without_cfg_a_lone_image_matches_its_batched_twin(tmp_path, ray_local):
    run_generate(config(tmp_path / "a", batch_size=1, guidance_scale=1.0, prompts=PROMPTS[:2], num_images_per_prompt=1))
    run_generate(config(tmp_path / "b", batch_size=2, guidance_scale=1.0, prompts=PROMPTS[:2], num_images_per_prompt=1))
    a, b = pixels(tmp_path / "a"), pixels(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_input_embeddings_skip_encoding_and_give_same_pixels(base_run, tmp_path):
    out, _ = base_run
    shards_before = EmbeddingStore(out / "embeddings").shard_paths()
    run_generate(config(tmp_path / "reuse", input_embeddings=str(out / "embeddings"), prompts=()))
    assert EmbeddingStore(out / "embeddings").shard_paths() == shards_before
    assert not (tmp_path / "reuse" / "embeddings").exists()
    assert pixels(tmp_path / "reuse").keys() == pixels(out).keys()
    for name, img in pixels(tmp_path / "reuse").items():
        np.testing.assert_array_equal(img, pixels(out)[name])


def test_embeddings_from_another_model_are_refused(base_run, tmp_path):
    import torch

    store = EmbeddingStore(tmp_path / "store")
    store.write_shard(
        {"prompt_embeds": torch.zeros(1, 4, 8)}, prompt_ids=["0"], prompts=["x"], negative_prompts=[""],
        model="pixart-alpha-256", family="pixart",
    )
    with pytest.raises(UserError, match="made by model pixart-alpha-256.*this run uses model demo"):
        run_generate(config(tmp_path / "o", input_embeddings=str(tmp_path / "store"), prompts=()))
    assert not (tmp_path / "o").exists()


def test_resume_keeps_complete_images_and_overwrite_redoes_them(base_run, tmp_path):
    import shutil

    out, _ = base_run
    run_dir = tmp_path / "resume"
    shutil.copytree(out, run_dir)
    victim = run_dir / "images" / "001__prompt_id:1__image_seed:000.png"
    kept_file = run_dir / "images" / "000__prompt_id:0__image_seed:000.png"
    kept_mtime = kept_file.stat().st_mtime_ns
    victim.unlink()
    (run_dir / "results.parquet").unlink()  # as if interrupted before the table was written
    summary = run_generate(config(run_dir, output_dir=str(run_dir), batch_size=8))
    assert (summary.new_images, summary.kept_images) == (1, 5)
    assert kept_file.stat().st_mtime_ns == kept_mtime
    np.testing.assert_array_equal(np.asarray(Image.open(victim)), pixels(out)[victim.name])
    assert pq.read_table(run_dir / "results.parquet").num_rows == 6
    summary = run_generate(config(run_dir, output_dir=str(run_dir), overwrite=True, batch_size=8))
    assert (summary.new_images, summary.kept_images) == (6, 0)


def test_resume_with_other_settings_is_refused(base_run):
    out, _ = base_run
    with pytest.raises(UserError, match="steps=4.*steps=5.*--overwrite"):
        run_generate(config(out, steps=5))


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ecad_ray_cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_end_to_end_in_a_fresh_process(tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a red circle\na blue square\n")
    out = tmp_path / "run"
    proc = run_cli("generate", "--prompt-file", str(prompt_file), "--output-dir", str(out), "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert "2 new image(s)" in proc.stderr
    assert len(list((out / "images").glob("*.png"))) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt-file", "{tmp}/missing.txt"], "--prompt-file {tmp}/missing.txt: no such file"),
        (["--prompt-file", "{tmp}/empty.txt"], "--prompt-file {tmp}/empty.txt: holds no prompts"),
        (["--prompt", "x", "--model", "no-such-model"], "--model no-such-model: unknown model"),
        (["--prompt", "x", "--height", "30"], "--height 30: model demo needs a multiple of 4"),
        (["--prompt", "x", "--num-images-per-prompt", "0"], "--num-images-per-prompt 0: must be a positive"),
        (["--prompt", "x", "--batch-size", "-2"], "--batch-size -2: must be a positive"),
        (["--prompt", "x", "--output-dir", "{tmp}/file.txt/run"], "is a file, not a folder"),
        (["--prompt", "x", "--schedule", "{tmp}/nope.json"], "--schedule {tmp}/nope.json: no such file"),
    ],
)
def test_bad_input_one_line_no_traceback_nothing_written(tmp_path, args, message, monkeypatch, capsys):
    from ecad_ray_cli.main import main

    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "out"
    argv = ["ecad-ray", "generate", "--output-dir", str(out)] + [a.format(tmp=tmp_path) for a in args]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err
    assert not out.exists()


def test_unwritable_output_dir(tmp_path, monkeypatch, capsys):
    import os

    if os.geteuid() == 0:
        # root ignores permission bits; a path under /proc cannot be created by anyone
        target = "/proc/ecad-ray-run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "run")
    from ecad_ray.run import _check_writable

    with pytest.raises(UserError, match="not writable"):
        _check_writable(Path(target))


def test_yaml_config_fills_options_and_cli_wins(tmp_path, monkeypatch):
    import ecad_ray_cli.generate as gen_cli
    from ecad_ray_cli.main import main

    seen = {}
    monkeypatch.setattr(gen_cli, "run", lambda cfg: seen.setdefault("cfg", cfg))
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: demo\nprompt_file: p.txt\nsteps: 7\nbatch_size: 3\nnum-images-per-prompt: 2\n")
    monkeypatch.setattr(sys, "argv", ["ecad-ray", "generate", "--config", str(cfg_file), "--steps", "9"])
    with pytest.raises(SystemExit):
        main()
    cfg = seen["cfg"]
    assert (cfg.steps, cfg.batch_size, cfg.num_images_per_prompt, cfg.prompt_file) == (9, 3, 2, "p.txt")


def test_cli_passes_every_option_to_the_config(monkeypatch):
    import ecad_ray_cli.generate as gen_cli
    from ecad_ray_cli.main import main

    seen = {}
    monkeypatch.setattr(gen_cli, "run", lambda cfg: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(sys, "argv", [
        "ecad-ray", "generate", "--prompt", "a", "--prompt", "b", "--model", "flux-dev", "--output-dir", "o",
        "--num-images-per-prompt", "3", "--batch-size", "5", "--height", "512", "--width", "256", "--steps", "8",
        "--guidance-scale", "2.5", "--negative-prompt", "blurry", "--start-seed", "7", "--seed-step", "2",
        "--num-workers", "4", "--min-workers", "2", "--address", "auto", "--device", "cuda", "--dtype", "bf16",
        "--overwrite",
    ])
    with pytest.raises(SystemExit):
        main()
    assert seen["cfg"] == GenerateConfig(
        model="flux-dev", output_dir="o", prompts=("a", "b"), num_images_per_prompt=3, batch_size=5, height=512,
        width=256, steps=8, guidance_scale=2.5, negative_prompt="blurry", start_seed=7, seed_step=2, num_workers=4,
        min_workers=2, address="auto", device="cuda", dtype="bf16", overwrite=True,
    )


def test_bad_yaml_config_is_one_line(tmp_path, monkeypatch, capsys):
    from ecad_ray_cli.main import main

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("stepz: 3\n")
    monkeypatch.setattr(sys, "argv", ["ecad-ray", "generate", "--config", str(cfg_file)])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 1
    assert f"--config {cfg_file}: unknown key(s) stepz" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_run_matches_itself_across_batch_sizes(tmp_path, ray_local):
    run_generate(config(tmp_path / "g8", batch_size=8, device="cuda"))
    run_generate(config(tmp_path / "g1", batch_size=1, device="cuda"))
    a, b = pixels(tmp_path / "g8"), pixels(tmp_path / "g1")
    assert a.keys() == b.keys()
    # GPU kernels may pick other algorithms per batch size: allow one grey level
    assert all(np.abs(a[k].astype(int) - b[k].astype(int)).max() <= 1 for k in a)


SCHEDULES = ROOT / "schedules" / "demo"


def test_schedules_through_generate_and_benchmark(base_run, tmp_path):
    """All-recompute reproduces the uncached pixels; FORA-every-2 changes them a little."""
    import shutil

    from actors.plan import run_benchmark

    out, _ = base_run
    sched_dir = tmp_path / "schedules"
    sched_dir.mkdir()
    for name in ("recompute_all_every_002", "default"):
        shutil.copy(SCHEDULES / f"{name}.json", sched_dir)
    base = config(tmp_path / "bench", input_embeddings=str(out / "embeddings"), prompts=(), steps=None, batch_size=6)
    summaries = run_benchmark(base, str(sched_dir))
    assert [Path(s.output_dir).name for s in summaries] == ["default", "recompute_all_every_002"]
    table = pq.read_table(tmp_path / "bench" / "results.parquet").to_pylist()
    assert {r["schedule"] for r in table} == {"default", "recompute_all_every_002"} and len(table) == 12
    assert all((tmp_path / "bench" / r["image_path"]).is_file() for r in table)
    # the uncached reference at the schedules' 20 steps
    run_generate(config(tmp_path / "plain", input_embeddings=str(out / "embeddings"), prompts=(), steps=20, batch_size=6))
    plain = pixels(tmp_path / "plain")
    full = pixels(tmp_path / "bench" / "default")
    fora = pixels(tmp_path / "bench" / "recompute_all_every_002")
    assert plain.keys() == full.keys() == fora.keys()
    assert all(np.array_equal(plain[k], full[k]) for k in plain)
    diffs = [np.abs(plain[k].astype(float) - fora[k]).mean() for k in plain]
    assert 0 < max(diffs) < 40
    macs = {name: json.loads((tmp_path / "bench" / name / "run.json").read_text())["macs"] for name in
            ("default", "recompute_all_every_002")}
    assert macs["recompute_all_every_002"] < 0.6 * macs["default"]


def test_metric_actors_score_inside_the_stream_as_the_offline_metrics_do(base_run, tmp_path):
    """A cached run scored in the stream against the uncached run of the same prompts and seeds:
    the in-stream PSNR is the textbook formula on the two PNGs, and every value (and FID)
    equals what `ecad-ray metrics` computes afterwards from the files."""
    import math

    from ecad_ray.metrics.config import MetricsConfig
    from ecad_ray.metrics.evaluate import evaluate_run

    out, _ = base_run
    embeddings = str(out / "embeddings")
    run_generate(config(tmp_path / "plain", input_embeddings=embeddings, prompts=(), steps=20, batch_size=6))
    metrics = MetricsConfig(metrics=("psnr", "ssim", "lpips", "fid"), fid_extractor="pixels", lpips_random_backbone=True)
    run_generate(config(tmp_path / "fora", input_embeddings=embeddings, prompts=(), steps=None, batch_size=4,
                        schedule=str(SCHEDULES / "recompute_all_every_002.json"), metrics=metrics,
                        reference=str(tmp_path / "plain"), fid_ref=str(tmp_path / "plain" / "images")))
    streamed = {r["image_path"]: r for r in pq.read_table(tmp_path / "fora" / "metrics.parquet").to_pylist()}
    streamed_fid = pq.read_table(tmp_path / "fora" / "summary.parquet").to_pylist()[0]["fid"]
    assert len(streamed) == 6
    for path, row in streamed.items():
        image = np.asarray(Image.open(tmp_path / "fora" / path), dtype=np.float64)
        ref = np.asarray(Image.open(tmp_path / "plain" / "images" / Path(path).name), dtype=np.float64)
        assert row["psnr"] == pytest.approx(10 * math.log10(255**2 / np.mean((image - ref) ** 2)), rel=1e-9)
        assert 10 < row["psnr"] < 60 and 0 < row["ssim"] < 1 and row["lpips"] > 0  # changed, not ruined
    evaluate_run(tmp_path / "fora", metrics, reference_dir=tmp_path / "plain", fid_ref=str(tmp_path / "plain" / "images"))
    offline = {r["image_path"]: r for r in pq.read_table(tmp_path / "fora" / "metrics.parquet").to_pylist()}
    assert offline.keys() == streamed.keys()
    for path, row in offline.items():
        for metric in ("psnr", "ssim", "lpips"):
            assert row[metric] == pytest.approx(streamed[path][metric], rel=1e-6), (path, metric)
    offline_fid = pq.read_table(tmp_path / "fora" / "summary.parquet").to_pylist()[0]["fid"]
    assert offline_fid == pytest.approx(streamed_fid, rel=1e-6) and offline_fid > 0


_STREAM_PROBE = """
import sys
from pathlib import Path
from actors.plan import run_generate
from ecad_ray.config import GenerateConfig

out, gate = Path(sys.argv[1]), Path(sys.argv[2])

def progress(done, total):
    (gate / "driver-has-batch-1").touch()

run_generate(GenerateConfig(model="demo", output_dir=str(out), prompts=("a red circle", "a blue square", "a yellow square"),
                            steps=4, num_images_per_prompt=2, batch_size=2), progress=progress)
"""


def test_first_batch_reaches_the_driver_before_the_second_is_generated(tmp_path):
    """Streaming, not buffering: the driver (progress bar, metric tables) holds batch 1 before the
    generator has made batch 2. The generator's test gate holds batch 2 until the driver reports
    batch 1, so a plan that buffers (Ray Data's default one-batch prefetch did: first image 5 s
    later at 64x64) times the gate out instead of passing. A fresh Ray in a fresh process, so
    the actor inherits the gate's environment variable."""
    from actors.generation import STREAM_TEST_GATE_ENV

    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, STREAM_TEST_GATE_ENV: str(gate)}
    done = subprocess.run([sys.executable, "-c", _STREAM_PROBE, str(tmp_path / "run"), str(gate)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "run" / "images").glob("*.png"))) == 6
    assert (gate / "driver-has-batch-1").exists()
    assert not (gate / "gate-timed-out").exists(), "the driver got batch 1 only after batch 2 was generated"


def test_ray_session_starts_its_own_ray_unless_given_an_address(monkeypatch):
    """Without --address a run gets a Ray of its own ("local"), even when `ray start` left one
    running or a stale address file behind (plain ray.init() tried to join it and failed with
    a traceback); $RAY_ADDRESS (set for a Ray Job's driver) and --address join a cluster."""
    import ray

    from actors.plan import ray_session

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_session(None, 3):
        pass
    with ray_session("auto", 3):
        pass
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with ray_session(None, 3):
        pass
    assert [c["address"] for c in calls] == ["local", "auto", "10.0.0.1:6379"]
    assert calls[0]["num_cpus"] == 3 and "num_cpus" not in calls[1] and "num_cpus" not in calls[2]


def test_joining_a_cluster_that_refuses_is_one_line(monkeypatch):
    """A cluster that is down, or wants a token this driver lacks: one line naming --address."""
    import ray

    from actors.plan import ray_session

    def refuse(**kw):
        raise ConnectionError("Could not find any running Ray instance")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(UserError, match=r"^--address 10\.0\.0\.9:6379: could not join the Ray cluster \(ConnectionError: "
                                        r"Could not find any running Ray instance\); .*RAY_AUTH_MODE=token"):
        with ray_session("10.0.0.9:6379", 2):
            pass


@pytest.mark.parametrize("address, loopback", [("127.0.0.1:6379", True), ("localhost:1", True), ("[::1]:6379", True),
                                               ("ray://127.0.0.1:10001", True), ("10.0.0.1:6379", False),
                                               ("auto", False), ("head.example:6379", False)])
def test_a_loopback_address_is_joined_with_cluster_mode_off(address, loopback):
    from actors.plan import _is_loopback

    assert _is_loopback(address) is loopback
