"""Faults in `dataset generate`: a worker killed, the driver SIGKILLed, two processes on one folder.

Each run is the CLI in a fresh process (a fresh local Ray inherits the test-only fault hooks:
`ECAD_RAY_TEST_FAULT` kills a generation worker at a given batch; `ECAD_RAY_TEST_LEDGER_GATE`
holds a driver after its first claim until the test says go). Afterwards every image exists
exactly once and the table has one row per image.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from actors.dataset_plan import LEDGER_TEST_GATE_ENV
from actors.stage import FAULT_ENV
from dataset_prompts import write_prompts
from ecad_ray.dataset.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ecad_ray_cli.main"]
CLASSES = ("red circle", "red square", "red triangle")


def args(out: Path, prompts: Path, *extra: str) -> list[str]:
    return [*CLI, "dataset", "generate", "--dataset", "shapes", "--class-range", "0:3", "--images-per-class", "4",
            "--chunk-size", "2", "--batch-size", "2", "--prompts", str(prompts), "--output-dir", str(out), *extra]


def env(**extra: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, LEDGER_TEST_GATE_ENV)}
    return {**base, **extra}


def images(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("*/*.jpg"))


def every_image_once(out: Path) -> None:
    expected = [f"{c.replace(' ', '_')}/{k:06d}.jpg" for c in CLASSES for k in range(4)]
    assert images(out) == expected
    table = pq.read_table(out / "dataset.parquet").to_pylist()
    assert sorted(r["path"] for r in table) == expected
    assert not [p for p in out.rglob("*") if p.suffix == ".tmp"]
    assert {t.state for t in Ledger(out).tasks()} == {"done"}


def test_a_worker_killed_mid_run_loses_nothing(tmp_path):
    prompts = write_prompts(tmp_path / "p.json", CLASSES)
    marker = tmp_path / "killed-once"
    done = subprocess.run(args(tmp_path / "out", prompts, "--steps", "2"), cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env(**{FAULT_ENV: f"generate:exit:2:{marker}"}))
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.exists()  # the worker really died at its second batch
    every_image_once(tmp_path / "out")


def test_the_driver_killed_mid_run_then_rerun_gives_every_image_once(tmp_path):
    prompts = write_prompts(tmp_path / "p.json", CLASSES)
    out = tmp_path / "out"
    command = args(out, prompts, "--steps", "8")
    driver = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(images(out)) < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = images(out)
    assert 2 <= len(written) < 12, "the kill should land mid-run"
    assert "running" in {t.state for t in Ledger(out).tasks()}  # the dead driver's lease (an hour would not matter)
    mtimes = {p: (out / p).stat().st_mtime_ns for p in written}
    done = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    every_image_once(out)
    assert {p: (out / p).stat().st_mtime_ns for p in written} == mtimes  # nothing made twice


@pytest.mark.slow  # two local Rays at once: ~110 s on 2 cores
def test_two_processes_share_one_folder_and_together_make_every_image_once(tmp_path):
    prompts = write_prompts(tmp_path / "p.json", CLASSES)
    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.mkdir()
    first = subprocess.Popen(args(out, prompts, "--steps", "2"), cwd=ROOT, env=env(**{LEDGER_TEST_GATE_ENV: str(gate)}),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (gate / "claimed").exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert (gate / "claimed").exists(), "the first process should hold a task"
    second = subprocess.Popen(args(out, prompts, "--steps", "2"), cwd=ROOT, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while time.monotonic() < deadline:  # the second takes every other task while the first is held
        states = [(t.state, t.worker) for t in Ledger(out).tasks()]
        if sum(s == "done" for s, _ in states) == len(states) - 1:
            break
        time.sleep(0.2)
    (gate / "go").touch()
    _, err1 = first.communicate(timeout=300)
    _, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err1[-2000:], err2[-2000:])
    every_image_once(out)
    workers = {t.worker for t in Ledger(out).tasks()}
    assert len(workers) == 2  # both processes did tasks
