"""The `dataset` CLI is thin: its options become exactly this `DatasetConfig`; status prints the ledger."""

from __future__ import annotations

from typer.testing import CliRunner

from ecad_ray.dataset.generation import DatasetConfig
from ecad_ray_cli import dataset as dataset_cli
from ecad_ray_cli.main import app


def test_generate_options_become_the_config(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(dataset_cli, "run", seen.append)
    done = CliRunner().invoke(app, [
        "dataset", "generate", "--dataset", "pacs", "--class-range", "0:3", "--increase-ratio", "1.2",
        "--prompts", "p.json", "--model", "demo", "--model", "pixart-alpha-256", "--model-share", "0.7,0.3",
        "--format", "png", "--size", "128", "--num-workers", "4", "--min-workers", "2", "--batch-size", "8",
        "--start-seed", "5", "--chunk-size", "20", "--output-dir", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert seen == [DatasetConfig(output_dir=str(tmp_path / "out"), prompts="p.json", models=("demo", "pixart-alpha-256"),
                                  dataset="pacs", class_range="0:3", increase_ratio=1.2, model_share=(0.7, 0.3),
                                  format="png", size=128, num_workers=4, min_workers=2, batch_size=8, start_seed=5,
                                  chunk_size=20)]


def test_a_bad_share_list_is_one_line(tmp_path):
    done = CliRunner().invoke(app, ["dataset", "generate", "--dataset", "shapes", "--prompts", "p.json",
                                    "--model-share", "0.7;0.3", "--output-dir", str(tmp_path / "out")])
    assert done.exit_code == 1
    assert str(done.exception) == "--model-share '0.7;0.3': expected numbers separated by commas, e.g. 0.7,0.3"
