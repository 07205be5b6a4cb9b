"""`var rl frontier` and the CLI's one-line errors for the RL commands."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest
import torch

from ecad_ray.var.checkpoints import load_var_model
from ecad_ray.var.rl.checkpoint import save_policy
from ecad_ray.var.rl.frontier import run_frontier
from ecad_ray.var.rl.policy import Policy, PolicyConfig
from ecad_ray.var.rl.state import ModelFacts, parse_actions


@pytest.fixture()
def policy_file(tmp_path):
    facts = ModelFacts.of(load_var_model("random:tiny"))
    torch.manual_seed(1)
    policy = Policy(PolicyConfig("random:tiny", facts.fingerprint, facts.patch_nums, facts.cond, facts.cond_dim,
                                 parse_actions("0,0.5,skip"), (0.5,), 0.0, 8))
    torch.nn.init.normal_(policy.net[-1].weight, std=3.0)
    path = tmp_path / "policy.safetensors"
    save_policy(path, policy, {"step": 0})
    return path


def test_frontier_rows_and_files(policy_file, tmp_path):
    table = run_frontier("random:tiny", tmp_path / "f", policy_file, budgets=(0.3, 0.6), uniform=(0.5,),
                         seeds_per_condition=1, batch_size=4)
    rows = {r["method"]: r for r in table.to_pylist()}
    assert set(rows) == {"unpruned", "tail pattern", "fastvar-like", "uniform 0.5", "rl @0.3", "rl @0.6"}
    assert rows["unpruned"]["flops_share"] == 1.0 and rows["unpruned"]["ssim"] == pytest.approx(1.0)
    for b in (0.3, 0.6):
        assert rows[f"rl @{b:g}"]["flops_share"] <= b + 1e-9
    assert rows["tail pattern"]["ssim"] < 1.0 and rows["tail pattern"]["flops_share"] < 1.0
    assert rows["unpruned"]["lpips"] == pytest.approx(0, abs=1e-6) and rows["tail pattern"]["lpips"] > 0
    assert all(r["judge_accuracy"] is None for r in rows.values())  # a class model has no judge
    written = pq.read_table(tmp_path / "f" / "frontier.parquet")
    assert written.num_rows == 6 and written.schema.metadata[b"lpips_backbone"] in (b"ImageNet", b"random (ImageNet weights absent)")
    assert (tmp_path / "f" / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_frontier_of_a_text_model_is_judged_on_heldout_captions(tmp_path):
    from ecad_ray.var.checkpoints import build_models, save_pipeline
    from ecad_ray.var.config import preset

    config = preset("tiny", cond="text", text_dim=16)
    save_pipeline(tmp_path / "text.safetensors", config, *build_models(config, seed=0))
    table = run_frontier(str(tmp_path / "text.safetensors"), tmp_path / "f", None, uniform=(0.5,),
                         seeds_per_condition=1, batch_size=4, lpips=False, conditions=4)
    rows = {r["method"]: r for r in table.to_pylist()}
    assert all(r["images"] == 4 and 0 <= r["judge_accuracy"] <= 1 for r in rows.values())
    assert all(r["lpips"] is None for r in rows.values())


def test_judge_accuracy_reads_captions_back():
    """Real renders of held-out captions score high; the same images under other captions lower."""
    from ecad_ray.shapes import heldout_captions, render_captions
    from ecad_ray.var.rl.frontier import judge_accuracy

    captions = heldout_captions(16)
    images = render_captions(captions, seed=0).images
    right = judge_accuracy(captions, images)
    wrong = judge_accuracy(captions[1:] + captions[:1], images)
    assert right > 0.8 and wrong < right - 0.2, (right, wrong)
    assert judge_accuracy(["one", "two"], images[:2]) is None  # not demo captions


def one_line_error(monkeypatch, capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 1 with exactly one `error: ...` line on stderr."""
    from ecad_ray_cli.main import main

    monkeypatch.setattr(sys, "argv", ["ecad-ray", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("args, message", [
    (["--flops-budget", "1.5"], "--flops-budget 1.5: must be in (0, 1]"),
    (["--flops-budget", "0"], "--flops-budget 0: must be in (0, 1]"),
    (["--actions", "0,big"], "--actions '0,big': 'big' is neither a ratio"),
    (["--group-size", "1"], "--group-size: must be >= 2"),
])
def test_train_bad_inputs_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    err = one_line_error(monkeypatch, capsys, ["var", "rl", "train", "--model", "random:tiny",
                                               "-o", str(tmp_path / "o"), *args])
    assert message in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_generate_with_a_bad_policy_is_one_line(tmp_path, monkeypatch, capsys, policy_file):
    base = ["var", "generate", "--classes", "0", "-o", str(tmp_path / "g")]
    err = one_line_error(monkeypatch, capsys, [*base, "--model", "random:tiny",
                                               "--controller", f"rl:{tmp_path}/nope.safetensors"])
    assert err == f"error: --controller rl:{tmp_path}/nope.safetensors: policy file not found"
    err = one_line_error(monkeypatch, capsys, [*base, "--model", "random:demo-var-digits", "--controller", f"rl:{policy_file}"])
    assert "policy was trained for model random:tiny" in err and "trained for scales 1,2,3,4, this model has 1,2,3,4,6,8" in err
