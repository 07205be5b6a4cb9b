"""`ecad-ray image` as users run it: options reach the library, text and --json reports,
and bad input ending in one `error:` line with exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_image_models import build_model_zoo
from typer.testing import CliRunner

from ecad_ray_cli.main import app, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_model_zoo(tmp_path_factory.mktemp("image_cli_models"), with_pixart=False, with_fp16=False)


def cli(*args: str):
    return CliRunner().invoke(app, ["image", *args], catch_exceptions=False)


def test_options_reach_the_library_unchanged(monkeypatch, tmp_path):
    import ecad_ray.image_tool as tool
    from ecad_ray.image_tool import ImageOptions

    seen = []
    monkeypatch.setattr(tool, "generate_image", lambda options, emit=None: seen.append(options))
    schedule = tmp_path / "s.json"
    schedule.write_text("{}")
    result = cli(
        "--model", "m/x", "--prompt", "p", "--negative-prompt", "n", "--out", str(tmp_path / "o.jpg"),
        "--steps", "3", "--cfg", "1.5", "--size", "64x32", "--seed", "9", "--dtype", "bf16",
        "--scheduler", "dpm", "--attn-slicing", "--offload", "--schedule", str(schedule),
    )
    assert result.exit_code == 0, result.output
    assert seen == [
        ImageOptions(
            model="m/x", prompt="p", negative_prompt="n", out=tmp_path / "o.jpg", steps=3, cfg=1.5,
            size="64x32", seed=9, dtype="bf16", scheduler="dpm", attn_slicing=True, offload=True,
            schedule=schedule,
        )
    ]


def test_text_report(zoo, tmp_path):
    out = tmp_path / "cat.png"
    result = cli("--model", str(zoo["sd"]), "--prompt", "a red cat", "--steps", "2", "--size", "17x15",
                 "--seed", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("torch ") and lines[1] == "Device: CPU"
    assert lines[2].startswith(f"Model: {zoo['sd']} (StableDiffusionPipeline), dtype fp32")
    assert lines[3] == "note: --size 17x15 rounded to 16x16 (multiples of 8)"
    assert lines[4] == "Generating: 16x16, steps=2, cfg=7.5, seed=5"
    assert [line.split(":")[0] for line in lines[5:9]] == ["Load", "Generation", "Total", "Peak memory"]
    assert lines[9] == f"Saved -> {out}" and len(lines) == 10
    assert out.is_file()


def test_json_report_is_one_object(zoo, tmp_path):
    out = tmp_path / "cat.png"
    result = cli("--model", str(zoo["sd"]), "--prompt", "a red cat", "--steps", "2", "--seed", "5",
                 "--scheduler", "euler_a", "--offload", "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the whole stdout is one JSON object
    assert data["environment"]["device"] == "CPU" and data["environment"]["torch"]
    assert (data["width"], data["height"], data["steps"], data["cfg"], data["seed"]) == (16, 16, 2, 7.5, 5)
    assert data["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert data["offload"] is False and data["attention_slicing"] is True
    assert any("needs an accelerator" in note for note in data["notes"])
    assert data["out"] == str(out) and out.is_file()
    assert data["peak_memory_bytes"] > 0 and data["total_seconds"] >= data["load_seconds"]


def _main_error(monkeypatch, capsys, *args: str) -> str:
    """Run `main()` as the console script does; return stderr after the exit code 1."""
    monkeypatch.setattr(sys, "argv", ["ecad-ray", "image", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "role, message",
    [("inpaint", "is an inpainting pipeline"), ("img2img", "is an image-to-image pipeline"),
     ("unet_only", "no model_index.json")],
)
def test_non_text_to_image_models_end_in_one_line(zoo, monkeypatch, capsys, role, message):
    err = _main_error(monkeypatch, capsys, "--model", str(zoo[role]), "--prompt", "x")
    assert err.startswith(f"error: --model {zoo[role]}: ") and message in err
    assert err.count("\n") == 1


def test_uncached_hub_id_ends_in_one_line(monkeypatch, capsys):
    err = _main_error(monkeypatch, capsys, "--model", "nobody/not-cached", "--prompt", "x")
    assert err.startswith("error: --model nobody/not-cached: cannot read its model_index.json")
    assert "huggingface-cli download nobody/not-cached" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "args, first_words",
    [(["--scheduler", "fancy"], "error: --scheduler fancy: unknown"),
     (["--size", "12by12"], "error: --size 12by12: expected WIDTHxHEIGHT")],
)
def test_bad_input_subprocess_one_line_no_traceback(args, first_words, tmp_path):
    base = {"--model": "demo", "--prompt": "a cat", "--out": str(tmp_path / "x.png")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "ecad_ray_cli", "image", *[x for kv in base.items() for x in kv]],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(first_words)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()
