"""The RL controller: per-item generation, local vs actor policy, no-pruning policy, bad inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import load_var_model
from ecad_ray.var.controllers import NoPruning, TailPattern, make_controller, parse_rl_spec
from ecad_ray.var.items import generate_items
from ecad_ray.var.rl.checkpoint import policy_controller, save_policy
from ecad_ray.var.rl.policy import Policy, PolicyConfig
from ecad_ray.var.rl.state import ModelFacts, check_budget, flops_share, parse_actions


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return load_var_model("random:tiny")


def make_policy(pipe, path, seed=0, force_action=None, budgets=(1.0,), min_scale_share=0.0):
    """A policy with random weights (varied choices), or one forced to one action."""
    facts = ModelFacts.of(pipe)
    cfg = PolicyConfig("random:tiny", facts.fingerprint, facts.patch_nums, facts.cond, facts.cond_dim, parse_actions("0,0.25,0.5,0.75,skip"),
                       budgets, min_scale_share, 16)
    torch.manual_seed(seed)
    policy = Policy(cfg)
    last = policy.net[-1]
    if force_action is None:
        torch.nn.init.normal_(last.weight, std=3.0)
    else:
        last.bias.data[force_action] = 100.0
    save_policy(path, policy, {"step": 0})
    return path


def test_per_item_ratios_match_each_item_generated_alone(pipe):
    """Items with different ratios in one batch get the images they would get alone."""
    plans = {0: [0.0, 0.0, 0.5, 1.0], 1: [0.0, 0.0, 0.0, 0.0], 2: [0.0, 0.0, 0.5, 0.25]}

    class PerItem:
        per_item = True

        def ratio(self, si, n, view):
            return [plans[b][si] for b in range(3)]

    cond = pipe.conditions(classes=[1, 2, 3])
    batch = generate_items(pipe, cond, [5, 6, 7], PerItem())
    assert batch.item_ratios == [plans[0], plans[1], plans[2]]
    for b in range(3):
        alone = generate_items(pipe, cond[b:b + 1], [5 + b], type("Fixed", (), {"ratio": lambda s, si, n, v: plans[b][si]})())
        torch.testing.assert_close(batch.images_B3HW[b], alone.images_B3HW[0], atol=1e-5, rtol=0)


def test_uniform_answer_is_the_one_shot_path(pipe):
    cond = pipe.conditions(classes=[0, 4])
    ours = generate_items(pipe, cond, [1, 2], TailPattern((0.5, 1.0)))
    theirs = pipe.generate(cond, [1, 2], TailPattern((0.5, 1.0)))
    assert torch.equal(ours.images_B3HW, theirs.images_B3HW)


def test_no_pruning_policy_reproduces_unpruned_images_bit_for_bit(pipe, tmp_path):
    controller = policy_controller(make_policy(pipe, tmp_path / "p.safetensors", force_action=0), pipe)
    cond = pipe.conditions(classes=[0, 3, 7, 9])
    result = generate_items(pipe, cond, [0, 1, 2, 3], controller)
    reference = pipe.generate(cond, [0, 1, 2, 3], NoPruning())
    assert result.item_ratios == [[0.0] * 4] * 4
    assert torch.equal(result.images_B3HW, reference.images_B3HW)


def test_budget_mask_keeps_every_item_within_budget(pipe, tmp_path):
    path = make_policy(pipe, tmp_path / "p.safetensors", force_action=0, budgets=(0.4,))
    controller = policy_controller(path, pipe)  # wants full scales, the budget forbids them
    result = generate_items(pipe, pipe.conditions(classes=[0, 1]), [0, 1], controller)
    facts = ModelFacts.of(pipe)
    shares = [flops_share(facts, r) for r in result.item_ratios]
    assert all(0 < s <= 0.4 + 1e-9 for s in shares), shares
    assert controller.describe().endswith("@0.4")


def test_local_and_actor_controllers_give_the_same_ratios(pipe, tmp_path, ray_local):
    from actors.controller import ActorAct, start_controller_actor

    path = make_policy(pipe, tmp_path / "p.safetensors", seed=3)
    cond = pipe.conditions(classes=list(range(8)))
    local = generate_items(pipe, cond, list(range(8)), policy_controller(path, pipe))
    handle = start_controller_actor(str(path), "test-controller")
    try:
        remote = generate_items(pipe, cond, list(range(8)), policy_controller(path, pipe, act=ActorAct(handle)))
    finally:
        ray_local.kill(handle)
    assert len({tuple(r) for r in local.item_ratios}) > 1  # the policy does pick per item
    assert remote.item_ratios == local.item_ratios
    assert torch.equal(remote.images_B3HW, local.images_B3HW)


def test_bad_inputs_give_one_line(pipe, tmp_path):
    with pytest.raises(UserError, match="--actions '0,half'.*'half'"):
        parse_actions("0,half")
    with pytest.raises(UserError, match="must include 0"):
        parse_actions("0.5,skip")
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(UserError, match=r"--flops-budget .*\(0, 1\]"):
            check_budget(bad)
    with pytest.raises(UserError, match=r"budget 2 must be in \(0, 1\]"):
        parse_rl_spec("rl:p.safetensors@2")
    with pytest.raises(UserError, match="policy file not found"):
        make_controller(f"rl:{tmp_path}/missing.safetensors", pipe.patch_nums, pipe)
    path = make_policy(pipe, tmp_path / "p.safetensors")
    other = load_var_model("random:demo-var-digits")
    with pytest.raises(UserError, match="trained for scales 1,2,3,4, this model has 1,2,3,4,6,8"):
        make_controller(f"rl:{path}", other.patch_nums, other)


def test_a_policy_is_bound_to_its_models_config(pipe, tmp_path):
    """Same scales and condition but another config (the digits vs the text demo case) is refused."""
    path = make_policy(pipe, tmp_path / "p.safetensors")
    policy = policy_controller(path, pipe)  # its own model: fine
    assert policy.config.fingerprint == pipe.config.fingerprint()
    twin = dataclasses.replace(ModelFacts.of(pipe), name="other", fingerprint="0123456789ab")
    with pytest.raises(UserError, match=r"trained for model random:tiny \(config \w{12}\), not other "
                                        r"\(config 0123456789ab\): same scales, another tokenizer"):
        policy.config.check_model(twin, "--controller rl:p")
    assert pipe.config.fingerprint() == dataclasses.replace(pipe.config, name="renamed").fingerprint()
    wider = dataclasses.replace(pipe.config, var=dataclasses.replace(pipe.config.var, embed_dim=64))
    assert wider.fingerprint() != pipe.config.fingerprint()


def test_shipped_policies(tmp_path):
    """Each shipped policy drives its own demo model only."""
    from ecad_ray.var.rl.checkpoint import SHIPPED, meta_path

    digits = load_var_model("demo-var-digits")
    controller = make_controller("rl:demo-var-digits@0.2", digits.patch_nums, digits)
    result = generate_items(digits, digits.conditions(classes=[0, 1]), [0, 1], controller)
    assert all(flops_share(ModelFacts.of(digits), r) <= 0.2 + 1e-9 for r in result.item_ratios)
    shipped = SHIPPED["demo-var-digits"]
    assert shipped.stat().st_size < 64_000 and meta_path(shipped).stat().st_size < 4_000  # small: no curves/moments
    text = load_var_model("random:demo-var")
    with pytest.raises(UserError, match="rl:demo-var-digits: policy was trained for model demo-var-digits"):
        make_controller("rl:demo-var-digits", text.patch_nums, text)
    with pytest.raises(UserError, match="rl:demo-var: policy was trained for model demo-var "):
        make_controller("rl:demo-var", digits.patch_nums, digits)  # the text demo's policy on the digits model


def test_shipped_text_policy_drives_the_text_demo_within_its_budget():
    """rl:demo-var (the shapes text-to-image demo's policy) prunes per caption and keeps the budget."""
    from ecad_ray.shapes import heldout_captions

    text = load_var_model("demo-var")
    facts = ModelFacts.of(text)
    captions = heldout_captions(4)
    controller = make_controller("rl:demo-var@0.3", text.patch_nums, text)
    result = generate_items(text, text.conditions(prompts=captions), [0, 1, 2, 3], controller)
    shares = [flops_share(facts, r) for r in result.item_ratios]
    assert all(0 < s <= 0.3 + 1e-9 for s in shares), shares
    assert any(r > 0 for ratios in result.item_ratios for r in ratios)  # it does prune


def test_export_keeps_the_policy_and_drops_the_history(pipe, tmp_path):
    from ecad_ray.var.rl.checkpoint import export_policy, load_policy, meta_path

    path = make_policy(pipe, tmp_path / "p.safetensors", seed=2)
    policy, _, _ = load_policy(path)
    optimizer = torch.optim.Adam(policy.parameters())
    policy.net[0].weight.sum().backward()
    optimizer.step()
    curves = [{"update": i + 1, "episodes": 8 * (i + 1), "mean_reward": 0.1 * i, "fidelity": 0.9, "flops_share": 0.5,
               "loss": 0.0} for i in range(50)]
    save_policy(path, policy, {"step": 50, "episodes": 400, "curves": curves}, optimizer)
    out = export_policy(path, tmp_path / "ship" / "small.safetensors")
    small, doc, optim = load_policy(out)
    assert optim == {} and "curves" not in doc and doc["final"]["mean_reward"] == pytest.approx(4.9)
    assert out.stat().st_size < path.stat().st_size and meta_path(out).stat().st_size < meta_path(path).stat().st_size
    for k, v in policy.state_dict().items():
        assert torch.equal(small.state_dict()[k], v)


def test_scales_with_one_allowed_action_do_not_ask_the_policy(pipe, tmp_path):
    """Cheap scales (below min_scale_share) run in full without a round trip; the others ask once per batch."""
    path = make_policy(pipe, tmp_path / "p.safetensors", seed=1)
    controller = policy_controller(path, pipe)
    cfg = dataclasses.replace(controller.config, min_scale_share=0.1)
    facts = ModelFacts.of(pipe)
    n = len(facts.patch_nums)
    cheap = [si for si in range(n) if facts.flops([0.0] * (si + 1))[si] / facts.unpruned_flops < 0.1]
    assert 0 < len(cheap) < n
    calls = []

    def act(feats, mask):
        calls.append(feats.shape[0])
        return controller.act(feats, mask)

    asking = dataclasses.replace(controller, config=cfg, act=act, decisions=[])
    result = generate_items(pipe, pipe.conditions(classes=[0, 1, 2]), [0, 1, 2], asking)
    assert calls == [3] * (n - len(cheap))  # one call per deciding scale, for the whole batch
    assert len(asking.decisions) == n - len(cheap)
    assert all(r[si] == 0.0 for r in result.item_ratios for si in cheap)


def test_rollout_tasks_are_shared_evenly_and_stay_with_their_reference():
    from actors.rl_train import assign_tasks
    from ecad_ray.var.rl.trainer import Task

    tasks = [Task(c, "", 7, 0.5) for c in (0, 0, 0, 1, 2, 3, 4, 5)]
    holders: dict = {}
    first = assign_tasks(tasks, 2, holders)
    assert sorted(len(s) for s in first) == [4, 4]
    assert sorted(i for s in first for i in s) == list(range(8))
    owner = {c: next(a for a in range(2) if a in holders[(c, "", 7)]) for c in range(6)}
    assert owner[1] != owner[4]
    again = assign_tasks([tasks[3], tasks[6]], 2, holders)  # classes 1 and 4: each back to its actor
    assert again[owner[1]] == [0] and again[owner[4]] == [1]
    assert all(len(holders[(c, "", 7)]) == 1 for c in range(6))  # no reference made twice
    crowded = assign_tasks([tasks[3], tasks[4]], 2, holders)  # classes 1, 2: both held by one actor: the split wins
    assert sorted(len(s) for s in crowded) == [1, 1]
