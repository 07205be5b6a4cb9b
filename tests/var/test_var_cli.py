"""`ecad-ray var ...`: options reach the plan exactly; one real Ray run on a random tiny model,
then spectra plots on its outputs; one-line errors."""

import dataclasses
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import ecad_ray  # noqa: F401
from ecad_ray.var.run import VarRunOptions, build_rows, generate_local
from ecad_ray_cli import var as var_cli
from ecad_ray_cli.main import app

runner = CliRunner()


def _fake_launch(seen):
    def fake_launch(rows, options, output_dir, num_workers, batch_size, address=None):
        seen.update(rows=rows, options=options, output_dir=output_dir, num_workers=num_workers, batch_size=batch_size,
                    address=address)
        return [{"seconds_per_image": 0.5}]

    return fake_launch


@pytest.mark.parametrize("spelling", ["shared", "old"])
def test_generate_passes_exact_options(monkeypatch, tmp_path, spelling):
    """The shared vocabulary (as `generate` spells it) and the old VAR spellings mean the same."""
    seen = {}
    monkeypatch.setattr(var_cli, "launch_generate", _fake_launch(seen))
    names = {"shared": ["--num-images-per-prompt", "--start-seed", "--guidance-scale", "--num-workers"],
             "old": ["--images-per-condition", "--seed", "--cfg", "--num-actors"]}[spelling]
    result = runner.invoke(app, ["var", "generate", "--model", "random:tiny", "--classes", "3,5",
                                 names[0], "2", names[1], "10", "--pruning-scales", "3:0.5,4:1.0",
                                 "--prune-layers", "1:2", names[2], "1.5", "--save-intermediates",
                                 "-o", str(tmp_path), names[3], "2", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert seen["options"] == VarRunOptions(model="random:tiny", controller="3:0.5,4:1.0", cfg=1.5,
                                            prune_layers=(1, 2), save_intermediates=True)
    assert [(r["class_label"], r["seed"]) for r in seen["rows"]] == [(3, 10), (3, 11), (5, 10), (5, 11)]
    assert seen["rows"][1]["item_name"] == "0001__class:3__seed:011"
    assert (seen["num_workers"], seen["batch_size"], seen["address"]) == (2, 3, None)


def test_old_spellings_are_hidden_and_a_conflict_is_one_line(monkeypatch, tmp_path):
    help_text = runner.invoke(app, ["var", "generate", "--help"]).output
    assert "--num-workers" in help_text and "--num-actors" not in help_text and "--images-per-condition" not in help_text
    monkeypatch.setattr(var_cli, "launch_generate", lambda *a, **k: pytest.fail("must fail before launching Ray"))
    result = runner.invoke(app, ["var", "generate", "--model", "random:tiny", "-o", str(tmp_path),
                                 "--num-workers", "2", "--num-actors", "3"])
    assert result.exit_code != 0
    assert "--num-workers 2 and --num-actors 3: the same option twice with different values" in str(result.exception)


def test_without_classes_or_prompts_every_class_is_drawn(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(var_cli, "launch_generate", _fake_launch(seen))
    result = runner.invoke(app, ["var", "generate", "--model", "random:tiny", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [r["class_label"] for r in seen["rows"]] == list(range(10))  # random:tiny has 10 classes


@pytest.mark.parametrize("args, message", [
    (["--classes", "1", "--pruning-scales", "5:0.5"], "--pruning-scales '5:0.5': width 5 is not a scale"),
    (["--classes", "1", "--controller", "fast"], "--controller fast: choose default or none"),
    (["--classes", "1", "--controller", "default", "--pruning-scales", "4:1"], "give one of them"),
    (["--classes", "12"], "--classes: 12 is outside 0..9"),
    (["--classes", "1", "--prune-layers", "0:9"], "--prune-layers: end 9 is past"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    from ecad_ray_cli.main import main

    monkeypatch.setattr(var_cli, "launch_generate", lambda *a: pytest.fail("must fail before launching Ray"))
    monkeypatch.setattr(sys, "argv", ["ecad-ray", "var", "generate", "--model", "random:tiny",
                                      "-o", str(tmp_path / "o"), *args])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


def test_module_entry_point_reports_missing_weights_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ecad_ray_cli", "var", "generate", "--model",
                           str(tmp_path / "var_d16.pth"), "--classes", "1", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: --model {tmp_path / 'var_d16.pth'}: not demo-var, "
                                                "demo-var-digits, random:<preset>, nor an existing file or folder"]


def test_end_to_end_generate_spectra_eval(tmp_path):
    orig, fast = tmp_path / "orig", tmp_path / "fast"
    # the unpruned reference in-process (same code path minus Ray), the pruned run through Ray Data
    generate_local(build_rows([1, 4], None, 1, 0), VarRunOptions(model="random:tiny"), orig, batch_size=4)
    result = runner.invoke(app, ["var", "generate", "--model", "random:tiny", "--classes", "1,4",
                                 "-o", str(fast), "--batch-size", "3",
                                 "--pruning-scales", "3:0.5,4:1.0", "--save-intermediates", "--spectra"])
    assert result.exit_code == 0, result.output
    item = fast / "0001__class:4__seed:000"
    cfg = json.loads((item / "config.json").read_text())
    assert cfg["ratios"] == [0, 0, 0.5, 1.0] and cfg["skipped_widths"] == [4] and cfg["seed"] == 0
    assert cfg["transformer_gflops"] < cfg["transformer_gflops_unpruned"]
    # intermediates only for computed scales (width 4 was skipped)
    assert sorted(p.name for p in (item / "summed_codes").iterdir()) == ["scale00_w1.png", "scale01_w2.png", "scale02_w3.png"]
    assert len(list((item / "rescale_codes").iterdir())) == 3
    assert len(list((item / "spectra").glob("*.npy"))) == 3 * 5
    run = json.loads((fast / "config_all.json").read_text())
    assert run["num_items"] == 2 and run["options"]["controller"] == "3:0.5,4:1.0"
    assert not (orig / "0000__class:1__seed:000" / "summed_codes").exists()
    assert (orig / "0001__class:4__seed:000" / "image.png").read_bytes() != (item / "image.png").read_bytes()
    assert json.loads((orig / "metadata.json").read_text())["0001__class:4__seed:000"] == {
        "prompt": None, "class": 4, "seed": 0}

    result = runner.invoke(app, ["var", "spectra", str(fast)])
    assert result.exit_code == 0, result.output
    assert len(list((fast / "spectra_plots").glob("*.png"))) == 2 * 2  # items x (pixel, latent)

    # the pruned run is scored against the unpruned one by the shared metrics (tests/var/test_var_metrics.py)
    assert (fast / "results.parquet").is_file() and (orig / "results.parquet").is_file()


def test_train_command_runs_a_short_training(tmp_path, monkeypatch):
    from ecad_ray.var import train as train_mod

    seen = {}
    real = train_mod.train_demo

    def short(out, config=None, tc=None, log=print):
        seen["tc"] = tc
        quick = dataclasses.replace(tc, vq_steps=2, var_steps=2, batch_size=8, warmup=1, num_images=32)
        return real(out, config, quick, log=log)

    monkeypatch.setattr(train_mod, "train_demo", short)
    for model, recipe in train_mod.RECIPES.items():
        out = tmp_path / f"{model}.safetensors"
        result = runner.invoke(app, ["var", "train", "--model", model, "--output", str(out), "--var-steps", "5"])
        assert result.exit_code == 0, result.output
        assert seen["tc"] == dataclasses.replace(recipe, var_steps=5, warmup=5)
        from ecad_ray.var import load_var_model

        assert load_var_model(str(out)).config.name == model
    result = runner.invoke(app, ["var", "train", "--model", "random:tiny"])
    assert result.exit_code != 0 and "trains the shipped demos" in str(result.exception)


def test_tokenizer_stage_trains_at_its_own_thread_count(tmp_path, monkeypatch):
    """The demo-var recipe trains its tokenizer at 1 thread (at 2 the same recipe gave a worse
    tokenizer); the transformer stage then gets `threads` back."""
    import torch

    from ecad_ray.var import train as train_mod

    seen = {}
    real_vq, real_var = train_mod.train_vqvae, train_mod.train_var

    def vq(*args, **kwargs):
        seen["tokenizer"] = torch.get_num_threads()
        return real_vq(*args, **kwargs)

    def var(*args, **kwargs):
        seen["transformer"] = torch.get_num_threads()
        return real_var(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_vqvae", vq)
    monkeypatch.setattr(train_mod, "train_var", var)
    before = torch.get_num_threads()
    tc = dataclasses.replace(train_mod.RECIPES["demo-var-digits"], vq_steps=2, var_steps=2, batch_size=8, warmup=1,
                             num_images=32, threads=2, vq_threads=1)
    try:
        train_mod.train_demo(tmp_path / "m.safetensors", tc=tc, log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    assert seen == {"tokenizer": 1, "transformer": 2}
