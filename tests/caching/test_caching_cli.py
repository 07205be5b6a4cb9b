"""`ecad-ray schedule info|validate|macs|make|bench` through the real CLI app."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ecad_ray.caching import load_schedule, validate_schedule
from ecad_ray_cli.main import app

ECAD = Path(__file__).resolve().parents[2] / "schedules"  # ECAD's published schedules, copied
FAST = ECAD / "schedules_in_paper/pixart_alpha_256/ours_fast.json"
runner = CliRunner()


def _ok(*args):
    result = runner.invoke(app, ["schedule", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_info_json_reports_fractions_and_macs():
    info = json.loads(_ok("info", FAST, "--json"))
    assert info["family"] == "pixart" and info["num_blocks"] == 28 and info["num_inference_steps"] == 20
    assert set(info["recompute_fraction"]) == {"attn1", "attn2", "ff"}
    assert 0 < info["recompute_fraction"]["attn2"] < 1
    assert info["total_macs"] == info["published_total_macs"] == 2134989471744


def test_info_text_for_flux():
    out = _ok("info", ECAD / "schedules_in_paper/flux_256/ours_fast.json")
    assert "flux" in out and "single_proj_mlp" in out and "63.023 TMACs" in out


def test_macs_prints_the_total():
    out = _ok("macs", ECAD / "alpha_cache_schedules/gen_default/default.json", "--model", "pixart-alpha-256")
    assert out.split()[0] == "5713796136960" and "120 text tokens" in out.splitlines()[0]
    out = _ok("macs", FAST, "--model", "pixart-alpha-256", "--by-step")
    assert "step 019" in out and "component attn1" in out


def test_validate_ok_and_one_line_error_with_exit_code_1(tmp_path):
    assert "ok:" in _ok("validate", FAST, "--model", "pixart-alpha-256")
    data = json.loads(FAST.read_text())
    data["cache_schedule"]["schedule"]["003"]["12"]["attn3"] = True
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "ecad_ray_cli", "schedule", "validate", str(bad), "--model",
                           "pixart-alpha-256"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f'error: {bad}: step "003" block "12": unknown component "attn3" (expected attn1, attn2, ff)'
    )


@pytest.mark.parametrize("args", [
    ["default"], ["fora", "--interval", "3"], ["every", "--every", "attn1=2,ff=3"],
    ["delta-dit", "--num-cached-blocks", "2", "--boundary-step", "5"], ["tgate", "--gate-step", "6"],
])
def test_make_writes_valid_schedules_with_macs(tmp_path, args):
    out = tmp_path / "s.json"
    _ok("make", *args, "--model", "demo", "--steps", "10", "--output", out)
    schedule = load_schedule(out)
    validate_schedule(schedule, "demo")
    assert schedule.num_inference_steps == 10
    assert schedule.metrics["total_macs"] == sum(v["macs"] for v in schedule.metrics["by_inference_step"].values())


def test_make_unknown_kind_is_a_user_error(tmp_path, monkeypatch, capsys):
    from ecad_ray_cli import main as cli_main

    monkeypatch.setattr(sys, "argv", ["ecad-ray", "schedule", "make", "magic", "--output", str(tmp_path / "s.json")])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "error: make magic: unknown kind; use one of default, fora, every, delta-dit, tgate"
    )


def test_bench_writes_ecad_latency_on_the_demo_model(tmp_path):
    schedule = tmp_path / "s.json"
    _ok("make", "fora", "--interval", "2", "--model", "demo", "--steps", "4", "--output", schedule)
    out = tmp_path / "timed.json"
    _ok("bench", schedule, "--model", "demo", "--warmups", "1", "--repeats", "2", "--device", "cpu", "--output", out)
    latency = load_schedule(out).metrics["latency"]
    assert set(latency) == {"avg", "batch_size", "num_samples", "warmup_steps", "gpu", "warmups", "latencies"}
    assert len(latency["latencies"]) == 2 and len(latency["warmups"]) == 1 and latency["avg"] > 0
    assert latency["gpu"].startswith("CPU")
    assert load_schedule(out).metrics["total_macs"] == load_schedule(schedule).metrics["total_macs"]
