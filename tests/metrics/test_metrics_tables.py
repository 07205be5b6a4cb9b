"""Scoring whole runs: the two Arrow tables, failure isolation, the CLI, and the Ray stage."""

import math
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from metrics_fakes import base_images, shifted, tiny_clip, write_run
from typer.testing import CliRunner

from ecad_ray.errors import StageError, UserError
from ecad_ray.metrics.config import MetricsConfig
from ecad_ray.metrics.evaluate import evaluate_run
from ecad_ray.metrics.tables import METRICS_SCHEMA, SUMMARY_SCHEMA

FAST = dict(lpips_random_backbone=True, fid_extractor="pixels")


@pytest.fixture()
def study(tmp_path):
    """Two runs side by side: the uncached reference ("none", 2 s/image) and "fast" (shifted, 1 s)."""
    images = base_images(6)
    parts = ["animals", "people"] * 3
    write_run(tmp_path / "none", "none", images, 2.0, partitions=parts)
    write_run(tmp_path / "fast", "fast", [shifted(i) for i in images], 1.0, partitions=parts)
    return tmp_path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def by_schedule(table, partition=""):
    return {r["schedule"]: r for r in table.to_pylist() if r.get("partition", "") == partition}


def clean_fid_of_files(files_a, files_b):
    """clean-fid's own FID of two image lists (its loader, 299 resize, np.cov, frechet_distance).

    Uses the `pixels` extractor, the one the `FAST` config gives the project, so any gap is in
    the loading, resizing, statistics or distance, not in the features' definition.
    """
    import torch
    from cleanfid.fid import fid_from_feats, get_files_features

    from ecad_ray.metrics.fid import pixel_features

    feats = [get_files_features([str(f) for f in files], pixel_features, num_workers=0, batch_size=8,
                                device=torch.device("cpu"), mode="clean", verbose=False)
             for files in (files_a, files_b)]
    return float(fid_from_feats(*feats))


def image_files(study, metrics_table, schedule, partition=""):
    """The image files of one schedule (and partition) as `metrics.parquet` lists them."""
    return [study / r["image_path"] for r in metrics_table.to_pylist()
            if r["schedule"] == schedule and (not partition or r["partition"] == partition)]


def test_tables_have_the_fixed_schema_and_known_values(study, clip_dir):
    config = MetricsConfig(metrics=("clip", "psnr", "ssim", "lpips", "fid"), clip_model=str(clip_dir), **FAST)
    result = evaluate_run(study, config, batch_size=4)
    assert result.reference_schedule == "none" and not result.load_errors
    metrics = pq.read_table(result.metrics_path)
    summary = pq.read_table(result.summary_path)
    assert metrics.schema.equals(METRICS_SCHEMA, check_metadata=True)
    assert summary.schema.equals(SUMMARY_SCHEMA, check_metadata=True)
    assert metrics.num_rows == 12 and metrics.column("metric_error").null_count == 12
    # a DiT run is unpruned: its rows and summary name pruning "none" (VAR runs fill the column)
    assert set(metrics.column("pruning").to_pylist()) == {"none"} == set(summary.column("pruning").to_pylist())
    rows = metrics.to_pylist()
    ref_rows = [r for r in rows if r["schedule"] == "none"]
    fast_rows = [r for r in rows if r["schedule"] == "fast"]
    assert all(r["psnr"] == math.inf and r["lpips"] == pytest.approx(0, abs=1e-7) for r in ref_rows)
    assert all(r["ssim"] == pytest.approx(1.0) for r in ref_rows)
    assert all(math.isfinite(r["psnr"]) and r["ssim"] < 1 and r["lpips"] > 0 for r in fast_rows)
    assert all(r["clip_score"] >= 0 for r in rows) and all(r["imagereward"] is None for r in rows)
    assert (study / fast_rows[0]["image_path"]).is_file()  # paths relative to the study folder
    s = by_schedule(summary)
    assert s["none"]["is_reference"] and not s["fast"]["is_reference"]
    assert s["none"]["fid"] == pytest.approx(0, abs=1e-6)
    fast_vs_none = clean_fid_of_files(image_files(study, metrics, "fast"), image_files(study, metrics, "none"))
    assert fast_vs_none > 0.1 and s["fast"]["fid"] == pytest.approx(fast_vs_none, rel=1e-6)
    assert s["fast"]["speedup"] == pytest.approx(2.0) and s["none"]["speedup"] == pytest.approx(1.0)
    assert s["fast"]["seconds_per_image"] == pytest.approx(1.0) and s["fast"]["n_images"] == 6
    assert s["none"]["psnr_mean"] == math.inf and s["fast"]["lpips_mean"] > 0
    fast_psnr = [r["psnr"] for r in fast_rows]
    assert s["fast"]["psnr_mean"] == pytest.approx(np.mean(fast_psnr))
    assert s["fast"]["psnr_std"] == pytest.approx(np.std(fast_psnr, ddof=1))
    # per-category rows, with FID against the reference schedule's images of the same category
    animals = by_schedule(summary, "animals")
    assert animals["fast"]["n_images"] == 3 and animals["none"]["fid"] == pytest.approx(0, abs=1e-6)
    assert animals["fast"]["fid"] == pytest.approx(clean_fid_of_files(
        image_files(study, metrics, "fast", "animals"), image_files(study, metrics, "none", "animals")), rel=1e-6)


def test_a_metric_that_cannot_load_leaves_the_rest_of_the_run(study, tmp_path):
    config = MetricsConfig(metrics=("clip", "psnr", "lpips"), clip_model=str(tmp_path / "no-clip"), **FAST)
    result = evaluate_run(study, config)
    assert list(result.load_errors) == ["clip"] and "--clip-model" in result.load_errors["clip"]
    rows = pq.read_table(result.metrics_path).to_pylist()
    assert len(rows) == 12 and all(r["clip_score"] is None for r in rows)
    assert all("not a CLIP save_pretrained folder" in r["metric_error"] for r in rows)
    assert all(r["psnr"] is not None and r["lpips"] is not None for r in rows)
    assert len(list((study / "fast" / "images").iterdir())) == 6  # images untouched


def test_a_metric_failing_at_run_time_is_recorded_per_row(study):
    config = MetricsConfig(metrics=("psnr", "fid"), lpips_random_backbone=True, fid_extractor="metrics_fakes:broken_features")
    result = evaluate_run(study, config)
    rows = pq.read_table(result.metrics_path).to_pylist()
    assert all(r["metric_error"] == "fid: RuntimeError: extractor exploded" for r in rows)
    assert all(r["psnr"] is not None for r in rows)
    summary = by_schedule(pq.read_table(result.summary_path))
    assert summary["fast"]["fid"] is None and summary["fast"]["n_errors"] == 6


def test_missing_reference_image_is_a_row_error_not_a_crash(study):
    table = pq.read_table(study / "none" / "results.parquet")
    pq.write_table(table.slice(1), study / "none" / "results.parquet")  # reference lacks p0
    result = evaluate_run(study, MetricsConfig(metrics=("psnr",), **FAST))
    rows = {(r["schedule"], r["prompt_id"]): r for r in pq.read_table(result.metrics_path).to_pylist()}
    assert rows[("fast", "p0")]["psnr"] is None
    assert "no image for prompt_id=p0 seed=7" in rows[("fast", "p0")]["metric_error"]
    assert rows[("fast", "p1")]["psnr"] is not None and rows[("fast", "p1")]["metric_error"] is None


def test_external_reference_run_and_fid_reference_folder(study, tmp_path):
    from PIL import Image

    ref_folder = tmp_path / "mjhq"
    for i, img in enumerate(base_images(6, seed=0)):
        (ref_folder / ("animals" if i % 2 == 0 else "people")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(ref_folder / ("animals" if i % 2 == 0 else "people") / f"{i}.png")
    config = MetricsConfig(metrics=("psnr", "fid"), **FAST)
    result = evaluate_run(study / "fast", config, reference_dir=study / "none", fid_ref=str(ref_folder),
                          cache_dir=tmp_path / "cache")
    summary = pq.read_table(result.summary_path)
    s = by_schedule(summary)["fast"]
    assert s["speedup"] == pytest.approx(2.0) and not s["is_reference"]
    metrics = pq.read_table(result.metrics_path)
    fast = [study / "fast" / r["image_path"] for r in metrics.to_pylist()]
    fast_animals = [study / "fast" / r["image_path"] for r in metrics.to_pylist() if r["partition"] == "animals"]
    assert s["fid"] == pytest.approx(clean_fid_of_files(fast, sorted(ref_folder.rglob("*.png"))), rel=1e-6)
    assert by_schedule(summary, "animals")["fast"]["fid"] == pytest.approx(
        clean_fid_of_files(fast_animals, sorted((ref_folder / "animals").glob("*.png"))), rel=1e-6)
    assert "_32x32_pixels4x4" in result.fid_source
    none_only = evaluate_run(study / "none", config, fid_ref=str(ref_folder), cache_dir=tmp_path / "cache")
    assert by_schedule(pq.read_table(none_only.summary_path))["none"]["fid"] == pytest.approx(0, abs=1e-6)


def test_reference_schedule_must_be_known(study):
    write_run(study / "other", "other", base_images(2), 1.0)
    (study / "none" / "results.parquet").unlink()
    with pytest.raises(UserError, match="which of fast, other is the all-recompute reference"):
        evaluate_run(study, MetricsConfig(metrics=("psnr",), **FAST))
    with pytest.raises(UserError, match="RUN_DIR .*no results.parquet"):
        evaluate_run(study / "none", MetricsConfig(metrics=("psnr",), **FAST))
    write_run(study / "fast-again", "fast", base_images(2), 1.0)
    with pytest.raises(UserError, match="runs fast and fast-again both hold schedule fast of model demo"):
        evaluate_run(study, MetricsConfig(metrics=("psnr",), **FAST), reference_schedule="fast")


def test_metrics_and_report_commands(study, clip_dir):
    from ecad_ray_cli.main import app

    args = ["metrics", str(study), "--metrics", "clip,psnr,ssim,lpips,fid", "--clip-model", str(clip_dir),
            "--lpips-random-backbone", "--fid-extractor", "pixels", "--device", "cpu"]
    out = CliRunner().invoke(app, args, catch_exceptions=False, env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "summary.parquet" in out.output and "none (ref)" in out.output
    report = CliRunner().invoke(app, ["report", str(study)], catch_exceptions=False)
    assert report.exit_code == 0
    for name in ("speed_quality.png", "grid.png"):
        from PIL import Image

        with Image.open(study / name) as im:
            assert im.size[0] > 200 and im.size[1] > 200


def test_metrics_command_reports_a_failed_metric_in_one_line_and_keeps_tables(study, tmp_path, monkeypatch, capsys):
    from ecad_ray_cli.main import main

    argv = ["ecad-ray", "metrics", str(study), "--metrics", "clip,psnr", "--clip-model", str(tmp_path / "absent"),
            "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "--clip-model" in errors[0] and "clip" in errors[1]
    rows = pq.read_table(study / "metrics.parquet").to_pylist()
    assert all(r["psnr"] is not None for r in rows)


def test_report_without_summary_says_what_to_run(tmp_path):
    from ecad_ray.metrics.report import read_summary

    with pytest.raises(UserError, match="run `ecad-ray metrics"):
        read_summary(tmp_path)


def test_metrics_stage_adds_columns_and_checks_its_input(study):
    from actors.metrics import MetricsStage
    from ecad_ray.metrics.runs import iter_result_batches
    from ecad_ray.metrics.suite import ERROR_COLUMN, FEATURES_COLUMN

    stage = MetricsStage(MetricsConfig(metrics=("psnr", "fid"), **FAST), reference_dir=study / "none")
    batch = next(iter_result_batches(study / "fast", 3))
    batch = {k: np.asarray(v) for k, v in batch.items()}
    batch["image"] = np.stack(batch["image"])
    out = stage(batch)
    assert set(stage.produces) >= {"psnr", FEATURES_COLUMN, ERROR_COLUMN}
    assert out["psnr"].shape == (3,) and np.isfinite(out["psnr"]).all()
    assert out[FEATURES_COLUMN].shape == (3, 48) and out["image"] is batch["image"]
    del batch["seed"]
    with pytest.raises(StageError, match="^metrics: .*batch lacks column.*seed"):
        stage(batch)
    MetricsStage.validate(MetricsConfig(metrics=("clip", "fid")))  # no reference needed: fine
    with pytest.raises(UserError, match="--reference: PSNR / SSIM / LPIPS need a reference run"):
        MetricsStage.validate(MetricsConfig(metrics=("psnr",)))
    with pytest.raises(UserError, match="--reference-schedule slow: no such schedule"):
        MetricsStage.validate(MetricsConfig(metrics=("psnr",)), study, "slow")


def test_metrics_stage_in_a_ray_data_plan_writes_the_same_tables(study, tmp_path, ray_local):
    ray = ray_local
    from actors.metrics import MetricsStage
    from ecad_ray.metrics.evaluate import write_metric_tables
    from ecad_ray.metrics.runs import iter_result_batches

    config = MetricsConfig(metrics=("psnr", "lpips", "fid"), **FAST)
    rows = []
    for run in ("none", "fast"):
        for batch in iter_result_batches(study / run, 6):
            for i in range(len(batch["prompt_id"])):
                rows.append({k: v[i] for k, v in batch.items()})
    ds = ray.data.from_items(rows).map_batches(
        MetricsStage,
        fn_constructor_kwargs={"config": config, "reference_dir": str(study / "none")},
        batch_size=4,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    out_dir = tmp_path / "ray-run"
    out_dir.mkdir()
    _, summary_path, _ = write_metric_tables(out_dir, ds.iter_batches(batch_size=4, batch_format="numpy"),
                                             reference_schedule="none")
    local = evaluate_run(study, config)
    ray_summary = by_schedule(pq.read_table(summary_path))
    local_summary = by_schedule(pq.read_table(local.summary_path))
    for key in ("psnr_mean", "lpips_mean", "fid", "speedup"):
        assert ray_summary["fast"][key] == pytest.approx(local_summary["fast"][key], rel=1e-5)


def test_fid_is_per_model_and_a_bad_fid_reference_keeps_the_summary(tmp_path):
    images = base_images(6)
    write_run(tmp_path / "a-none", "none", images, 2.0, model="demo")
    write_run(tmp_path / "b-none", "none", [shifted(i, 8) for i in images], 2.0, model="other")
    write_run(tmp_path / "b-fast", "fast", [shifted(i, 8) for i in images], 1.0, model="other")
    config = MetricsConfig(metrics=("fid",), fid_extractor="pixels")
    result = evaluate_run(tmp_path, config)
    rows = {(r["model"], r["schedule"]): r for r in pq.read_table(result.summary_path).to_pylist()}
    # each model is compared with its own baseline, never with another model's images
    assert rows[("demo", "none")]["fid"] == pytest.approx(0, abs=1e-6)
    assert rows[("other", "none")]["fid"] == pytest.approx(0, abs=1e-6)
    assert rows[("other", "fast")]["fid"] == pytest.approx(0, abs=1e-6)  # same pixels as its baseline
    with pytest.raises(UserError, match="--fid-ref .*no such folder"):
        evaluate_run(tmp_path, config, fid_ref=str(tmp_path / "missing"))
    one_image = tmp_path / "tiny-ref"
    one_image.mkdir()
    from PIL import Image

    Image.fromarray(images[0]).save(one_image / "0.png")
    (tmp_path / "summary.parquet").unlink()
    with pytest.raises(UserError, match="needs at least 2 images"):
        evaluate_run(tmp_path, config, fid_ref=str(one_image), cache_dir=tmp_path / "cache")
    assert pq.read_table(tmp_path / "summary.parquet").column("fid").null_count == 3


def test_macs_from_run_json_and_report_by_partition(study):
    import json

    from ecad_ray_cli.main import app

    (study / "fast" / "run.json").write_text(json.dumps({"settings": {"macs": 1.5e12}}))
    result = evaluate_run(study, MetricsConfig(metrics=("psnr",), **FAST))
    s = by_schedule(pq.read_table(result.summary_path))
    assert s["fast"]["macs"] == pytest.approx(1.5e12) and s["none"]["macs"] is None
    out = CliRunner().invoke(app, ["report", str(study), "--partitions"], catch_exceptions=False,
                             env={"COLUMNS": "200"})
    assert "animals" in out.output and "people" in out.output and "1.50e+12" in out.output


def test_reference_images_are_matched_within_each_model(tmp_path):
    images = base_images(4)
    other = [shifted(i, 8) for i in images]
    write_run(tmp_path / "a-none", "none", images, 2.0, model="demo")
    write_run(tmp_path / "b-none", "none", other, 2.0, model="other")
    write_run(tmp_path / "b-fast", "fast", other, 1.0, model="other")
    result = evaluate_run(tmp_path, MetricsConfig(metrics=("psnr",)))
    rows = pq.read_table(result.metrics_path).to_pylist()
    assert all(r["psnr"] == math.inf for r in rows)  # each image against its own model's baseline


def test_runs_written_before_the_seconds_rename_still_score(tmp_path):
    """Older results.parquet files and PNG records call the per-image time `seconds`."""
    from ecad_ray.metrics.runs import read_results
    from ecad_ray.records import read_png_record, write_png

    images = base_images(2)
    for schedule, secs in (("none", 2.0), ("fast", 1.0)):
        run = write_run(tmp_path / schedule, schedule, images, secs)
        table = pq.read_table(run / "results.parquet")
        old = table.rename_columns(["seconds" if n == "seconds_per_image" else n for n in table.column_names])
        pq.write_table(old, run / "results.parquet")
    table = read_results(tmp_path, ["schedule", "seconds_per_image"])
    assert sorted(zip(*table.to_pydict().values())) == [("fast", 1.0), ("fast", 1.0), ("none", 2.0), ("none", 2.0)]
    write_png(images[0], tmp_path / "old.png", {"seed": 7, "seconds": 1.5})  # a resumed run reads these back
    assert read_png_record(tmp_path / "old.png") == {"seed": 7, "seconds_per_image": 1.5}
    result = evaluate_run(tmp_path, MetricsConfig(metrics=("psnr",), **FAST), batch_size=4)
    s = by_schedule(pq.read_table(result.summary_path))
    assert s["fast"]["speedup"] == pytest.approx(2.0)
