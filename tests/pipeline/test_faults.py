"""Faults: one line from any stage, nothing lost or duplicated, one writer per run folder.

Runs that need a fault inside a Ray worker start the CLI in a fresh process (a fresh local Ray
inherits the test-only `ECAD_RAY_TEST_FAULT`); the rest use the session's Ray.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from actors.plan import run_generate
from actors.stage import FAULT_ENV
from ecad_ray.config import GenerateConfig
from ecad_ray.errors import UserError
from ecad_ray.records import read_png_record
from ecad_ray.run import ERROR_LOG, run_lock

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ("a small red circle", "a large blue square", "a yellow triangle")
CLI = [sys.executable, "-m", "ecad_ray_cli.main"]


def config(out: Path, **kw) -> GenerateConfig:
    return GenerateConfig(**{**dict(model="demo", output_dir=str(out), prompts=PROMPTS, steps=2,
                                    num_images_per_prompt=2, batch_size=2), **kw})


def cli(out: Path, *extra: str, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`ecad-ray generate` on the demo prompts above, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    args = [*CLI, "generate", "--output-dir", str(out), "--steps", "2", "--num-images-per-prompt", "2",
            "--batch-size", "2", *[a for p in PROMPTS for a in ("--prompt", p)], *extra]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def images(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "images").glob("*.png"))


def test_a_corrupted_shard_is_one_line_naming_it(tmp_path, ray_local):
    run_generate(config(tmp_path / "base"))
    shard = next((tmp_path / "base" / "embeddings").glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:300])
    with pytest.raises(UserError) as caught:
        run_generate(config(tmp_path / "again", prompts=(), input_embeddings=str(tmp_path / "base" / "embeddings")))
    line = str(caught.value)
    assert "\n" not in line
    assert re.match(r"generate: prompt_id '\d', seed \d; prompt_id '\d', seed \d: ", line)  # the failing batch
    assert f"embeddings shard {shard} is unreadable" in line and "delete it and rerun" in line
    log = tmp_path / "again" / ERROR_LOG
    assert line.endswith(f"(full traceback: {log})") and "SafetensorError" in log.read_text()
    # nothing half-written: the other shards' batches may have finished, each PNG whole (it carries
    # its table row, so a rerun keeps it); the broken shard's images and the table are not there
    written = sorted((tmp_path / "again" / "images").glob("*.png"))
    assert len(written) < 6 and all(read_png_record(p) is not None for p in written)
    assert not (tmp_path / "again" / "results.parquet").exists()
    assert not [p for p in (tmp_path / "again").rglob("*") if p.suffix == ".tmp"]


def test_a_failing_constructor_is_one_line_and_not_restarted_forever(tmp_path):
    started = time.monotonic()
    done = cli(tmp_path / "run", fault="generate:init", timeout=240)
    assert done.returncode == 1
    lines = [x for x in done.stderr.splitlines() if x.strip() and "logging.cc" not in x]
    assert lines == [f"error: generate: starting the worker: RuntimeError: test fault: generate constructor fails "
                     f"({FAULT_ENV}) (full traceback: {tmp_path / 'run' / ERROR_LOG})"], done.stderr[-2000:]
    assert time.monotonic() - started < 200


def test_an_actor_killed_mid_run_leaves_every_image_exactly_once(tmp_path):
    marker = tmp_path / "killed-once"
    done = cli(tmp_path / "run", fault=f"generate:exit:2:{marker}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.exists()  # the worker really died at its second batch
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert len(table) == 6 and len({(r["prompt_id"], r["seed"]) for r in table}) == 6
    assert len(images(tmp_path / "run")) == 6


def test_driver_killed_then_resumed_gives_every_image_once(tmp_path):
    out = tmp_path / "run"
    args = [*CLI, "generate", "--output-dir", str(out), "--steps", "8", "--num-images-per-prompt", "4",
            "--batch-size", "2", *[a for p in PROMPTS for a in ("--prompt", p)]]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(images(out)) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = images(out)
    assert 2 <= len(written) < 12, "the kill should land mid-run"
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(written) <= set(images(out)) and len(images(out)) == 12
    assert len(pq.read_table(out / "results.parquet")) == 12
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp") or p.suffix == ".tmp"]


def test_ctrl_c_stops_with_one_line_and_the_resume_command(tmp_path):
    out = tmp_path / "run"
    args = [*CLI, "generate", "--output-dir", str(out), "--steps", "8", "--num-images-per-prompt", "4",
            "--batch-size", "2", *[a for p in PROMPTS for a in ("--prompt", p)]]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(images(out)) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, stderr = driver.communicate(timeout=60)
    assert time.monotonic() - interrupted < 20
    assert driver.returncode == 130, stderr[-2000:]
    lines = [x for x in stderr.splitlines() if x.strip() and "logging.cc" not in x]
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and " of 12 new image(s) written" in lines[0]
    assert "run the same command again to resume: ecad-ray generate --output-dir" in lines[0]


def test_a_second_run_into_a_busy_folder_is_refused_in_one_line(tmp_path, ray_local):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom ecad_ray.run import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
                               str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"^--output-dir {out}: another ecad-ray run \(pid {holder.pid} on .*\) "
                                            "is writing there; wait for it to finish or use another --output-dir$"):
            run_generate(config(out))
        assert images(out) == []
    finally:
        holder.kill()
        holder.wait()
    with run_lock(out):  # a dead holder leaves no stale lock behind
        pass


def test_taking_the_run_lock_clears_what_a_killed_writer_left(tmp_path):
    """A driver SIGKILLed between writing a PNG's temporary file and renaming it leaves
    `.<name>.<hex>.tmp`; the next run into the folder removes it (it holds the lock: nobody writes)."""
    out = tmp_path / "run"
    leftover = out / "images" / ".000__prompt_id:0__image_seed:002.png.6a61cc7e.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a png")
    kept = [out / "images" / "000__prompt_id:0__image_seed:000.png", out / ".notes.tmp", out / "a.tmp"]
    for p in kept:
        p.write_bytes(b"x")
    with run_lock(out):
        assert not leftover.exists() and all(p.exists() for p in kept)


def test_a_corrupted_png_is_made_again_and_a_corrupted_table_rebuilt(tmp_path, ray_local):
    out = tmp_path / "run"
    run_generate(config(out))
    first = sorted((out / "images").glob("*.png"))
    first[0].write_bytes(first[0].read_bytes()[:100])
    (out / "results.parquet").write_bytes(b"not parquet")
    summary = run_generate(config(out))
    assert (summary.new_images, summary.kept_images) == (1, 5)
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == 6 and {r["image_path"] for r in table} == {f"images/{p.name}" for p in first}
