"""`dataset generate` on the demo model: files, table, determinism, resume, status and check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from actors.dataset_plan import run_dataset_generate
from ecad_ray.dataset.check import check_dataset, check_lines
from ecad_ray.dataset.generation import DatasetConfig, plan_dataset
from ecad_ray.dataset.ledger import Ledger, TaskSpec
from ecad_ray.errors import UserError
from dataset_prompts import write_prompts

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ecad_ray_cli.main"]


def config(out: Path, prompts: Path, **kw) -> DatasetConfig:
    return DatasetConfig(**{**dict(output_dir=str(out), prompts=str(prompts), dataset="shapes", class_range="0:2",
                                   images_per_class=5, chunk_size=3, steps=2, batch_size=2), **kw})


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.jpg"))}


def test_a_dataset_is_class_folders_a_table_and_does_not_depend_on_the_workers(tmp_path, shapes_prompts, ray_local):
    one = run_dataset_generate(config(tmp_path / "one", shapes_prompts, batch_size=1))
    two = run_dataset_generate(config(tmp_path / "two", shapes_prompts, batch_size=3, num_workers=2))
    assert (one.new_images, one.tasks_done, two.new_images) == (10, 4, 10)  # 5 = 3 + 2 images per class
    made = files(tmp_path / "one")
    assert sorted(made) == [f"{c}/{k:06d}.jpg" for c in ("red_circle", "red_square") for k in range(5)]
    assert files(tmp_path / "two") == made  # same bytes from 1 worker x batch 1 and 2 workers x batch 3
    with Image.open(tmp_path / "one" / "red_circle" / "000000.jpg") as img:
        assert (img.format, img.size) == ("JPEG", (224, 224))
    rows = pq.read_table(tmp_path / "one" / "dataset.parquet").to_pylist()
    assert rows[4] == {"class": "red circle", "prompt_index": 1, "prompt": "a small red circle", "model": "demo",
                       "seed": 4, "schedule": "none", "path": "red_circle/000004.jpg"}
    assert len(rows) == 10 and len({r["path"] for r in rows}) == 10
    again = run_dataset_generate(config(tmp_path / "one", shapes_prompts))
    assert (again.new_images, again.kept_images, again.tasks_done) == (0, 10, 0)  # a finished dataset stays as it is


def test_a_rerun_takes_a_dead_processs_task_and_keeps_its_images(tmp_path, shapes_prompts, ray_local):
    cfg = config(tmp_path / "out", shapes_prompts)
    reference = run_dataset_generate(config(tmp_path / "ref", shapes_prompts))
    assert reference.new_images == 10
    plan = plan_dataset(cfg)
    ledger = Ledger(cfg.output_dir)
    ledger.setup(plan.meta, plan.tasks)
    dead = subprocess.run([sys.executable, "-c", "from ecad_ray.dataset.ledger import worker_id; print(worker_id())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    task = ledger.claim(dead)  # a driver killed mid-task: one image written, the task still "running"
    kept = tmp_path / "out" / plan.rows(task)[0].path
    kept.parent.mkdir(parents=True)
    kept.write_bytes((tmp_path / "ref" / plan.rows(task)[0].path).read_bytes())
    os.utime(kept, (1, 1))
    summary = run_dataset_generate(cfg)
    assert (summary.new_images, summary.kept_images) == (9, 1)
    assert kept.stat().st_mtime == 1  # an image on disk is not made again
    assert files(tmp_path / "out") == files(tmp_path / "ref")
    assert {t.state for t in Ledger(cfg.output_dir).tasks()} == {"done"}


def test_check_counts_each_class_and_scores_train_on_generated(tmp_path, shapes_prompts, ray_local):
    cfg = config(tmp_path / "out", shapes_prompts, class_range="0:3", images_per_class=4, chunk_size=4)
    run_dataset_generate(cfg)
    check = check_dataset(tmp_path / "out", epochs=1)
    assert check.complete and [c.images for c in check.classes] == [4, 4, 4]
    assert check.strategy == "prompts" and check.real_images == 60 and 0.0 <= check.accuracy <= 1.0
    (tmp_path / "out" / "red_circle" / "000003.jpg").unlink()
    lines = check_lines([check_dataset(tmp_path / "out", epochs=1)])
    assert lines[:2] == [f"{tmp_path / 'out'} (prompts): 11/12 images, 1 class(es) short", "  red circle: 3/4"]
    assert lines[3].startswith("  prompts  accuracy ") and lines[3].endswith("on 60 real images (3 classes, chance 0.333)")


@pytest.mark.parametrize("args, line", [
    (["--dataset", "nosuch"], "error: --dataset 'nosuch' is not a known class set; known: "),
    (["--dataset", "shapes", "--class-range", "5:5"], "error: --class-range '5:5' selects no class (the set has 24 classes)"),
    (["--dataset", "shapes", "--class-range", "0:3", "--prompts", "{few}"],
     "error: --prompts {few}: no prompts for 1 of 3 classes: 'red triangle'"),
    (["--dataset", "shapes", "--prompts", "{missing}"], "error: --prompts {missing}: no such file"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, shapes_prompts, args, line):
    few = write_prompts(tmp_path / "few.json", ["red circle", "red square"])
    fill = {"few": str(few), "missing": str(tmp_path / "missing.json")}
    args = [a.format(**fill) for a in args]
    if "--prompts" not in args:
        args += ["--prompts", str(shapes_prompts)]
    out = tmp_path / "out"
    done = subprocess.run([*CLI, "dataset", "generate", *args, "--images-per-class", "2", "--output-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and (lines[0] == line.format(**fill) or line.endswith(": ") and lines[0].startswith(line))
    assert not out.exists()


def test_models_share_every_class_in_contiguous_chunks(tmp_path, shapes_prompts):
    plan = plan_dataset(config(tmp_path / "out", shapes_prompts, class_range="0:1", images_per_class=10, chunk_size=3,
                               models=("demo", "other"), model_share=(0.7, 0.3)))
    assert plan.tasks == [TaskSpec("00000-00-00000", "red circle", "demo", 0, 0, 3),
                          TaskSpec("00000-00-00001", "red circle", "demo", 1, 3, 3),
                          TaskSpec("00000-00-00002", "red circle", "demo", 2, 6, 1),
                          TaskSpec("00000-01-00000", "red circle", "other", 0, 7, 3)]
    rows = plan.rows(plan.tasks[3])
    assert [(r.model, r.seed, r.prompt, r.path) for r in rows] == [
        ("other", 7, "a small red circle", "red_circle/000007.jpg"), ("other", 8, "a large red circle", "red_circle/000008.jpg"),
        ("other", 9, "a red circle", "red_circle/000009.jpg")]
    with pytest.raises(UserError, match=r"^--model-share 0.5: needs one share per --model \(2\)$"):
        plan_dataset(config(tmp_path / "out", shapes_prompts, models=("demo", "other"), model_share=(0.5,)))
    assert not (tmp_path / "out").exists()
