"""The RL pruning policy on an Infinity model (infinity-tiny, random weights, CPU): per-item
groups split Infinity's state (text context included), the policy reads the pooled prompt,
its FLOPs shares come from Infinity's formula, training runs, and a policy stays bound to it."""

from __future__ import annotations

import pytest
import torch

from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import load_var_model
from ecad_ray.var.controllers import NoPruning, make_controller
from ecad_ray.var.infinity.flops import infinity_flops
from ecad_ray.var.items import generate_items
from ecad_ray.var.rl.checkpoint import policy_controller, save_policy
from ecad_ray.var.rl.policy import Policy, PolicyConfig
from ecad_ray.var.rl.state import ModelFacts, parse_actions

MODEL = "infinity-tiny"
PROMPTS = ["a red circle", "two green birds on a blue square", "a cat", "three small yellow triangles"]


@pytest.fixture(scope="module")
def tiny():
    return load_var_model(MODEL)


def make_policy(pipe, path, force_action=None, budgets=(1.0,)):
    """A policy for `pipe` with random weights (varied choices), or one forced to one action."""
    facts = ModelFacts.of(pipe)
    cfg = PolicyConfig(MODEL, facts.fingerprint, facts.patch_nums, facts.cond, facts.cond_dim,
                       parse_actions("0,0.25,0.5,0.75,skip"), budgets, 0.0, 16)
    torch.manual_seed(0)
    policy = Policy(cfg)
    if force_action is None:
        torch.nn.init.normal_(policy.net[-1].weight, std=3.0)
    else:
        policy.net[-1].bias.data[force_action] = 100.0
    save_policy(path, policy, {"step": 0})
    return path


def share(pipe, ratios):
    """FLOPs share by Infinity's own formula (not through ModelFacts)."""
    n = len(pipe.patch_nums)
    return sum(infinity_flops(pipe.config, ratios, pipe.layer_range)) / sum(
        infinity_flops(pipe.config, [0.0] * n, pipe.layer_range))


def test_facts_read_the_pooled_prompt_and_infinitys_flops(tiny):
    facts = ModelFacts.of(tiny)
    assert (facts.cond, facts.cond_dim) == ("text", tiny.config.transformer.text_channels)
    assert facts.fingerprint == tiny.config.fingerprint() and facts.patch_nums == tiny.patch_nums
    plan = [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.25]
    assert facts.flops(plan) == infinity_flops(tiny.config, plan, tiny.layer_range)
    cond = tiny.conditions(prompts=PROMPTS[:2])  # 3 and 7 words: the first is padded
    pooled = tiny.start(cond, [0, 1]).pooled_condition()
    assert pooled.shape == (2, facts.cond_dim)
    torch.testing.assert_close(pooled[0], cond.states_BTC[0, :3].mean(dim=0))  # padding not averaged in


def test_no_pruning_policy_reproduces_unpruned_images_bit_for_bit(tiny, tmp_path):
    controller = policy_controller(make_policy(tiny, tmp_path / "p.safetensors", force_action=0), tiny)
    cond = tiny.conditions(prompts=PROMPTS)
    result = generate_items(tiny, cond, [0, 1, 2, 3], controller)
    reference = tiny.generate(cond, [0, 1, 2, 3], NoPruning())
    assert result.item_ratios == [[0.0] * len(tiny.patch_nums)] * 4
    assert torch.equal(result.images_B3HW, reference.images_B3HW)


@pytest.mark.parametrize("cfg", [3.0, 1.0])  # with CFG's null rows, and without (cfg 1 runs none)
def test_per_item_ratios_match_each_item_generated_alone(tiny, cfg):
    """Items split into groups mid-generation (after pruned scales: caches, restoration maps and
    the text context follow them) get the images they would get alone."""
    pipe = tiny.with_sampling(cfg=cfg)
    plans = [[0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.25], [0.0] * 7, [0.0, 0.0, 0.0, 0.0, 0.5, 0.25, 1.0]]

    class PerItem:
        per_item = True

        def ratio(self, si, n, view):
            return [plan[si] for plan in plans]

    batch = generate_items(pipe, pipe.conditions(prompts=PROMPTS[:3]), [5, 6, 7], PerItem())
    assert batch.item_ratios == plans
    for b, plan in enumerate(plans):
        fixed = type("Fixed", (), {"ratio": lambda self, si, n, view, plan=plan: plan[si]})()
        alone = generate_items(pipe, pipe.conditions(prompts=[PROMPTS[b]]), [5 + b], fixed)
        torch.testing.assert_close(batch.images_B3HW[b], alone.images_B3HW[0], atol=1e-5, rtol=0)


def test_budget_mask_keeps_every_item_within_budget(tiny, tmp_path):
    path = make_policy(tiny, tmp_path / "p.safetensors", force_action=0, budgets=(0.4,))
    controller = policy_controller(path, tiny)  # wants full scales, the budget forbids them
    result = generate_items(tiny, tiny.conditions(prompts=PROMPTS), [0, 1, 2, 3], controller)
    shares = [share(tiny, r) for r in result.item_ratios]
    assert all(0 < s <= 0.4 + 1e-9 for s in shares), shares
    varied = policy_controller(make_policy(tiny, tmp_path / "v.safetensors"), tiny, 0.6)
    result = generate_items(tiny, tiny.conditions(prompts=PROMPTS), [0, 1, 2, 3], varied)
    assert all(share(tiny, r) <= 0.6 + 1e-9 for r in result.item_ratios)
    assert len({tuple(r) for r in result.item_ratios}) > 1  # the policy does pick per item


def test_short_training_run_then_generate_with_the_policy(tiny, tmp_path):
    """Two GRPO updates in process on shapes captions; `var generate --controller rl:` then runs it."""
    from ecad_ray.var.rl.trainer import Rollouts, TrainConfig, local_rollout, make_policy_config
    from ecad_ray.var.rl.training import train
    from ecad_ray.var.run import VarRunOptions, generate_local, plan_var_run

    cfg = TrainConfig(model=MODEL, episodes=2 * 2 * 2, group_size=2, groups_per_update=2, budgets=(0.5,),
                      seeds_per_condition=1, checkpoint_every=1, lr=0.05)
    rollout = local_rollout(Rollouts(tiny, make_policy_config(tiny, cfg), cfg.reward), cfg.group_size)
    doc = train(tiny, cfg, tmp_path / "rl", rollout)
    assert doc["step"] == 2 and len(doc["curves"]) == 2
    assert doc["config"]["fingerprint"] == tiny.config.fingerprint() and doc["config"]["cond_dim"] == 128
    assert all(0 < row["flops_share"] <= 0.5 + 1e-9 for row in doc["curves"])

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\ntwo green birds\n")
    options = VarRunOptions(model=MODEL, controller=f"rl:{tmp_path / 'rl' / 'policy.safetensors'}@0.5")
    configs = generate_local(plan_var_run(options, prompt_file=prompts), options, tmp_path / "run", batch_size=2)
    for c in configs:
        assert c["controller"].endswith("@0.5") and len(c["ratios"]) == len(tiny.patch_nums)
        assert c["transformer_gflops"] <= 0.5 * c["transformer_gflops_unpruned"] + 1e-9
        assert (tmp_path / "run" / c["item_name"] / "image.png").exists()


def test_a_policy_trained_for_infinity_tiny_is_refused_on_demo_var(tiny, tmp_path):
    path = make_policy(tiny, tmp_path / "p.safetensors")
    demo = load_var_model("random:demo-var")
    with pytest.raises(UserError, match=r"^--controller rl:\S+: policy was trained for model infinity-tiny "
                                        r"\(config \w{12}\), not demo-var .*: trained for scales 1,2,4,6,8,12,16"):
        make_controller(f"rl:{path}", demo.patch_nums, demo)
