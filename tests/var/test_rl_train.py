"""RL training: reward and advantage maths, checkpoints, resume after Ctrl-C, Ray workers, generate."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import load_var_model
from ecad_ray.var.rl.checkpoint import load_policy
from ecad_ray.var.rl.reward import RewardConfig, fidelity, group_advantages
from ecad_ray.var.rl.trainer import Rollouts, TrainConfig, local_rollout, make_policy_config
from ecad_ray.var.rl.training import Interrupted, train

MODEL = "random:tiny"


@pytest.fixture(scope="module")
def pipe():
    return load_var_model(MODEL)  # build_models(seed=0): the same weights as every worker's


def config(**changes):
    base = dict(model=MODEL, episodes=4 * 2 * 4, group_size=4, groups_per_update=2, budgets=(0.4, 0.8),
                seeds_per_condition=2, checkpoint_every=1, lr=0.05)
    return TrainConfig(**{**base, **changes})


def rollout_fn(pipe, cfg, fail_at=None):
    inner = local_rollout(Rollouts(pipe, make_policy_config(pipe, cfg), cfg.reward), cfg.group_size)
    calls = {"n": 0}

    def rollout(weights, tasks, seed):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt
        return inner(weights, tasks, seed)

    return rollout


def test_reward_and_group_advantages():
    r = RewardConfig("ssim", flops_cost=0.5)
    assert r.reward(0.9, 0.4) == pytest.approx(0.7)
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert adv.mean().abs() < 1e-6 and adv.std(unbiased=False) == pytest.approx(1.0, abs=1e-4)
    assert adv.argmax() == 3
    assert torch.equal(group_advantages(torch.full((4,), 0.5)), torch.zeros(4))  # no signal, no step
    img = (torch.rand(16, 16, 3) * 255).to(torch.uint8).numpy()
    assert fidelity(img, img, "ssim") == pytest.approx(1.0) and fidelity(img, img, "psnr") == 1.0
    assert fidelity(255 - img, img, "psnr") < 0.5
    with pytest.raises(UserError, match="--fidelity lpipz"):
        RewardConfig("lpipz")


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(pipe, tmp_path):
    cfg = config()
    whole = train(pipe, cfg, tmp_path / "whole", rollout_fn(pipe, cfg))
    with pytest.raises(Interrupted, match="interrupted after update 2 .*--resume continues"):
        train(pipe, cfg, tmp_path / "cut", rollout_fn(pipe, cfg, fail_at=3))
    saved = json.loads((tmp_path / "cut" / "policy.json").read_text())
    assert saved["step"] == 2 and len(saved["curves"]) == 2  # a usable checkpoint of what finished
    with pytest.raises(UserError, match="already holds policy.safetensors; pass --resume"):
        train(pipe, cfg, tmp_path / "cut", rollout_fn(pipe, cfg))
    with pytest.raises(UserError, match="--group-size was 4 there, 2 now"):
        train(pipe, config(group_size=2), tmp_path / "cut", rollout_fn(pipe, cfg), resume=True)
    resumed = train(pipe, cfg, tmp_path / "cut", rollout_fn(pipe, cfg), resume=True)
    assert [r["update"] for r in resumed["curves"]] == [1, 2, 3, 4]
    assert [r["mean_reward"] for r in resumed["curves"]] == [r["mean_reward"] for r in whole["curves"]]
    a, _, _ = load_policy(tmp_path / "whole" / "policy.safetensors")
    b, _, _ = load_policy(tmp_path / "cut" / "policy.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert pq.read_table(tmp_path / "cut" / "curves.parquet").num_rows == 4
    assert (tmp_path / "cut" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_training_raises_reward_on_the_demo_model(tmp_path):
    """Not a stub: a short run on the shipped digits VAR improves its mean reward."""
    demo = load_var_model("demo-var-digits")
    cfg = TrainConfig(model="demo-var-digits", episodes=8 * 8 * 20, budgets=(0.5,), checkpoint_every=20, lr=1e-2)
    doc = train(demo, cfg, tmp_path, rollout_fn(demo, cfg))
    rewards = [r["mean_reward"] for r in doc["curves"]]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.05, rewards
    assert all(r["flops_share"] <= 0.5 + 1e-9 for r in doc["curves"])


def test_ray_training_and_generate_with_the_policy(pipe, tmp_path, ray_local):
    from actors.rl_train import run_rl_train
    from actors.var_plan import run_var_generate
    from ecad_ray.var.run import VarRunOptions, build_rows, generate_local

    cfg = config()
    doc = run_rl_train(pipe, cfg, tmp_path / "rl", num_workers=2)
    local = train(pipe, cfg, tmp_path / "local", rollout_fn(pipe, cfg))
    assert [r["mean_reward"] for r in doc["curves"]] == [r["mean_reward"] for r in local["curves"]]

    policy = tmp_path / "rl" / "policy.safetensors"
    rows = build_rows(list(range(6)), None, 2, seed=0)
    options = VarRunOptions(model=MODEL, controller=f"rl:{policy}@0.4")
    on_ray = run_var_generate(rows, options, tmp_path / "gen", num_actors=2, batch_size=4)
    here = generate_local(rows, options, tmp_path / "gen_local", batch_size=4)
    by_name = {c["item_name"]: c for c in here}
    for c in on_ray:
        assert c["controller"] == f"rl:{policy}@0.4"
        assert c["ratios"] == by_name[c["item_name"]]["ratios"]  # actor-served = in-process
        assert c["transformer_gflops"] <= 0.4 * c["transformer_gflops_unpruned"] + 1e-9
        img = tmp_path / "gen" / c["item_name"] / "image.png"
        assert img.read_bytes() == (tmp_path / "gen_local" / c["item_name"] / "image.png").read_bytes()


def test_training_on_a_text_model_uses_caption_tasks(tmp_path):
    """A text-conditional VAR trains on shapes captions (the demo-var path, on a tiny hashed-text model)."""
    from ecad_ray.var.checkpoints import build_models
    from ecad_ray.var.config import VARConfig, tiny_config
    from ecad_ray.var.generation import VarPipeline
    from ecad_ray.var.rl.trainer import training_pool

    cfg = tiny_config()
    cfg = cfg.__class__(name="tiny-text", vqvae=cfg.vqvae, sampling=cfg.sampling,
                        var=VARConfig(**{**cfg.var.__dict__, "cond": "text", "text_encoder": "hash", "text_dim": 16}))
    text_pipe = VarPipeline(cfg, *build_models(cfg))
    pool = training_pool(text_pipe, 1)
    assert len(pool) == 32 and all(c == -1 and " " in p for c, p, _ in pool)
    tc = config(model="tiny-text", episodes=8)
    doc = train(text_pipe, tc, tmp_path, rollout_fn(text_pipe, tc))
    assert doc["step"] == 1 and doc["config"]["cond"] == "text" and doc["config"]["cond_dim"] == 16
