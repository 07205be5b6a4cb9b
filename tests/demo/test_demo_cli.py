"""`ecad-ray demo score` on a run folder made of real shapes images, and `demo train`'s options."""

import subprocess
import sys
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from ecad_ray.records import write_results
from ecad_ray.shapes import render_captions
from ecad_ray_cli.main import app

CAPTIONS = ["a small red circle above a blue square", "a large white cross", "a green triangle left of a yellow square"]


def _fake_run(folder: Path, captions, images, schedule=None) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (caption, image) in enumerate(zip(captions, images)):
        rel = f"images/{i:03d}.png"
        Image.fromarray(image).save(folder / rel)
        rows.append({"prompt_index": i, "prompt_id": str(i), "prompt": caption, "seed": 0, "model": "demo",
                     "image_path": rel, "schedule": schedule or "none"})
    write_results(rows, folder / "results.parquet")
    return folder


def test_score_of_real_images_is_perfect_and_of_wrong_images_is_not(tmp_path):
    captions = CAPTIONS * 4
    real = render_captions(captions, seed=3).images
    run = _fake_run(tmp_path / "good", captions, real)
    result = CliRunner().invoke(app, ["demo", "score", str(run)])
    assert result.exit_code == 0, result.output
    row = [line for line in result.output.splitlines() if line.startswith("none")][0].split()
    assert row[1] == "12" and row[2:5] == ["100.0%", "100.0%", "100.0%"]

    wrong = render_captions(["a large blue square"] * len(captions), seed=3).images
    bad = _fake_run(tmp_path / "bad", captions, wrong)
    result = CliRunner().invoke(app, ["demo", "score", str(bad)])
    assert result.exit_code == 0, result.output
    row = [line for line in result.output.splitlines() if line.startswith("none")][0].split()
    assert float(row[2].rstrip("%")) < 50


def test_score_without_results_table_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ecad_ray_cli", "demo", "score", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: RUN_DIR {tmp_path}: no results.parquet in it nor in its "
                                                "subfolders (not a `generate` or `var generate` run?)"]


def test_train_passes_options_to_the_trainer(tmp_path, monkeypatch):
    import ecad_ray.models.demo_train as trainer

    seen = {}

    def fake_train(out, cfg, log):
        seen.update(out=out, cfg=cfg)
        return {"data": 1.0}

    monkeypatch.setattr(trainer, "train_demo", fake_train)
    result = CliRunner().invoke(app, ["demo", "train", "--out", str(tmp_path), "--steps", "40", "--seed", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert seen["out"] == tmp_path
    cfg = seen["cfg"]
    assert (cfg.dit_steps, cfg.seed, cfg.threads, cfg.checkpoint_every, cfg.dit_lr, cfg.init_from) == (
        40, 3, 1, 40, trainer.TrainConfig().dit_lr, None)


def test_train_init_from_missing_file_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ecad_ray_cli", "demo", "train", "--init-from", str(tmp_path / "w.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--init-from" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_train_without_options_runs_the_shipped_recipe(tmp_path, monkeypatch):
    """`ecad-ray demo train` alone must be the exact recipe of the shipped weights."""
    import ecad_ray.models.demo_train as trainer

    seen = {}
    monkeypatch.setattr(trainer, "train_demo", lambda out, cfg, log: seen.update(cfg=cfg) or {})
    result = CliRunner().invoke(app, ["demo", "train", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["cfg"] == trainer.TrainConfig()
