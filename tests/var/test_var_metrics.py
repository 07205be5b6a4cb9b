"""VAR runs share the project's tables and metric code: a `var generate` run writes the common
`results.parquet`, `ecad-ray metrics` scores it into `metrics.parquet` / `summary.parquet` with
its pruning beside the schedule, `ecad-ray report` draws it, and `ecad-ray demo score` judges a
text-conditional VAR run made from shapes captions."""

import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

import ecad_ray  # noqa: F401
from ecad_ray.metrics.demo_score import score_run
from ecad_ray.metrics.tables import METRICS_SCHEMA, SUMMARY_SCHEMA
from ecad_ray.prompts import from_texts
from ecad_ray.records import RESULTS_SCHEMA
from ecad_ray.shapes import render_captions
from ecad_ray.var.run import VarRunOptions, build_rows, generate_local
from ecad_ray_cli.main import app

sys.path.insert(0, str(Path(__file__).parents[1] / "metrics"))
from metrics_fakes import base_images, write_run  # noqa: E402

runner = CliRunner()
PRUNED = "3:0.5,4:1"  # width 3 half pruned, width 4 skipped (random:tiny has widths 1, 2, 3, 4)


@pytest.fixture(scope="module")
def var_runs(tmp_path_factory):
    """A folder of two VAR runs of the same rows: unpruned and pruned."""
    root = tmp_path_factory.mktemp("var_runs")
    rows = build_rows([1, 4], None, 2, 0)
    generate_local(rows, VarRunOptions(model="random:tiny"), root / "orig", batch_size=4)
    generate_local(rows, VarRunOptions(model="random:tiny", controller=PRUNED), root / "fast", batch_size=4)
    return root


def test_a_var_run_writes_the_shared_results_table(var_runs):
    table = pq.read_table(var_runs / "fast" / "results.parquet")
    assert table.schema.equals(RESULTS_SCHEMA)
    rows = table.to_pylist()
    assert [(r["prompt_id"], r["seed"], r["prompt"]) for r in rows] == [
        ("class:1", 0, "one"), ("class:1", 1, "one"), ("class:4", 0, "four"), ("class:4", 1, "four")]
    assert {(r["schedule"], r["pruning"]) for r in rows} == {("none", PRUNED)}
    assert all((var_runs / "fast" / r["image_path"]).is_file() and r["height"] == 8 for r in rows)
    full = pq.read_table(var_runs / "orig" / "results.parquet").to_pylist()
    assert {r["pruning"] for r in full} == {"none"}
    assert all(0 < p["macs"] < f["macs"] for p, f in zip(rows, full))  # pruned and skipped scales cost less


def test_metrics_score_var_runs_into_the_shared_tables(var_runs):
    result = runner.invoke(app, ["metrics", str(var_runs), "--metrics", "psnr,ssim,lpips", "--lpips-random-backbone"])
    assert result.exit_code == 0, result.output
    metrics = pq.read_table(var_runs / "metrics.parquet")
    summary = pq.read_table(var_runs / "summary.parquet")
    assert metrics.schema.equals(METRICS_SCHEMA, check_metadata=True)
    assert summary.schema.equals(SUMMARY_SCHEMA, check_metadata=True)
    assert metrics.column_names.index("pruning") == metrics.column_names.index("schedule") + 1
    rows = metrics.to_pylist()
    assert len(rows) == 8 and {r["schedule"] for r in rows} == {"none"}
    ref = [r for r in rows if r["pruning"] == "none"]
    pruned = [r for r in rows if r["pruning"] == PRUNED]
    assert len(ref) == len(pruned) == 4
    assert all(r["psnr"] == math.inf and r["lpips"] == pytest.approx(0, abs=1e-6) and r["ssim"] == 1 for r in ref)
    assert all(math.isfinite(r["psnr"]) and r["lpips"] > 0 and r["ssim"] < 1 for r in pruned)
    by_pruning = {r["pruning"]: r for r in summary.to_pylist() if r["partition"] == ""}
    assert set(by_pruning) == {"none", PRUNED}
    assert by_pruning["none"]["is_reference"] and not by_pruning[PRUNED]["is_reference"]
    assert by_pruning[PRUNED]["macs"] < by_pruning["none"]["macs"]
    assert by_pruning["none"]["speedup"] == pytest.approx(1.0) and by_pruning[PRUNED]["speedup"] > 0
    assert "pruning" in result.output and PRUNED in result.output


def test_report_draws_var_runs(var_runs):
    if not (var_runs / "summary.parquet").is_file():
        runner.invoke(app, ["metrics", str(var_runs), "--metrics", "psnr", "--lpips-random-backbone"])
    result = runner.invoke(app, ["report", str(var_runs)])
    assert result.exit_code == 0, result.output
    for name in ("grid.png", "speed_quality.png"):
        with Image.open(var_runs / name) as image:
            assert image.width > 100 and image.height > 100
            assert np.asarray(image.convert("L")).std() > 0  # something is drawn
    assert "wrote" in result.output and PRUNED in result.output


def test_dit_and_var_runs_are_read_through_one_reader(tmp_path):
    write_run(tmp_path / "dit-none", "none", base_images(2), 2.0)
    write_run(tmp_path / "dit-fast", "fast", base_images(2, seed=1), 1.0)
    rows = build_rows([2], None, 2, 0)
    generate_local(rows, VarRunOptions(model="random:tiny"), tmp_path / "var-none", batch_size=2)
    generate_local(rows, VarRunOptions(model="random:tiny", controller=PRUNED), tmp_path / "var-fast", batch_size=2)
    result = runner.invoke(app, ["metrics", str(tmp_path), "--metrics", "psnr"])
    assert result.exit_code == 0, result.output
    summary = {(r["model"], r["schedule"], r["pruning"]): r for r in pq.read_table(tmp_path / "summary.parquet").to_pylist()}
    assert set(summary) == {("demo", "none", "none"), ("demo", "fast", "none"),
                            ("random:tiny", "none", "none"), ("random:tiny", "none", PRUNED)}
    assert summary[("demo", "none", "none")]["is_reference"] and summary[("random:tiny", "none", "none")]["is_reference"]
    assert summary[("demo", "fast", "none")]["psnr_mean"] < math.inf  # compared with its own model's reference


def test_var_eval_prints_the_original_vs_pruned_table_from_the_shared_metrics(var_runs, tmp_path, monkeypatch):
    """`var eval --orig --fast --rl` scores each run with `ecad-ray metrics`' own pass: its
    figures are that pass's summary, and the unpruned run against itself is identical."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet LPIPS weights there
    args = ["var", "eval", "--orig", str(var_runs / "orig"), "--fast", str(var_runs / "fast"),
            "--rl", str(var_runs / "orig"), "--metrics", "psnr,ssim,lpips"]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "LPIPS backbone: random (ImageNet weights absent)" in result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│")}
    assert {"orig", "fast", "rl"} <= set(lines)
    fast = {r["pruning"]: r for r in pq.read_table(var_runs / "fast" / "summary.parquet").to_pylist()}[PRUNED]
    assert f"{fast['ssim_mean']:.4f}" in lines["fast"] and f"{fast['lpips_mean']:.4f}" in lines["fast"]
    assert 0 < fast["ssim_mean"] < 1 and fast["speedup"] > 0
    same = pq.read_table(var_runs / "orig" / "summary.parquet").to_pylist()[0]
    assert same["ssim_mean"] == 1 and same["lpips_mean"] == pytest.approx(0, abs=1e-6)
    bad = runner.invoke(app, ["var", "eval", "--orig", str(var_runs / "orig"), "--fast", str(tmp_path)])
    assert bad.exit_code != 0 and f"--fast {tmp_path}: no results.parquet" in str(bad.exception)


CAPTIONS = ["a small red circle above a blue square", "a large white cross", "a green triangle left of a yellow square"]


@pytest.fixture(scope="module")
def text_var_run(tmp_path_factory):
    """A tiny text-conditional VAR (random weights) run on shapes captions, unpruned and pruned."""
    from ecad_ray.var.checkpoints import build_models, save_pipeline
    from ecad_ray.var.config import preset

    root = tmp_path_factory.mktemp("text_var")
    config = preset("tiny", cond="text", text_dim=16)
    save_pipeline(root / "tiny-text.safetensors", config, *build_models(config, seed=0))
    model = str(root / "tiny-text.safetensors")
    rows = build_rows(None, from_texts(CAPTIONS * 2), 1, 0)
    generate_local(rows, VarRunOptions(model=model), root / "runs" / "none", batch_size=3)
    generate_local(rows, VarRunOptions(model=model, controller=PRUNED), root / "runs" / "pruned", batch_size=3)
    return root / "runs"


def test_demo_score_judges_a_text_var_run_by_its_captions(text_var_run):
    scores = {s.group: s for s in score_run(text_var_run)}
    assert set(scores) == {"none", PRUNED}
    assert all(s.fidelity.n_images == 6 and s.fidelity.n_skipped == 0 for s in scores.values())
    # the random model draws noise; with each item's image replaced by a true render of its own
    # caption, the same run must read back as (nearly) perfect: images and captions are paired right
    results = pq.read_table(text_var_run / "none" / "results.parquet").to_pylist()
    truth = render_captions([r["prompt"] for r in results], seed=3).images
    for r, image in zip(results, truth):
        Image.fromarray(image).save(text_var_run / "none" / r["image_path"])
    scores = {s.group: s for s in score_run(text_var_run)}
    assert scores["none"].fidelity.colour == 1.0 and scores["none"].fidelity.shape == 1.0
    assert scores[PRUNED].fidelity.colour < 1.0
    result = runner.invoke(app, ["demo", "score", str(text_var_run)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert lines["none"][1:4] == ["6", "100.0%", "100.0%"] and lines[PRUNED][1] == "6"
