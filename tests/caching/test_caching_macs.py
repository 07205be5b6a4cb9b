"""Analytic MACs: every published total reproduced in ECAD's convention, the real cost beside
it, and the formulas equal to a count over real module shapes."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ecad_ray.caching import load_schedule, resolve_spec, schedule_mac_report, schedule_macs, shipped_spec
from ecad_ray.caching.macs import always_macs, component_macs, conventions_differ
from ecad_ray.caching.schedule import make_schedule
from ecad_ray.errors import UserError
from ecad_ray.models.registry import shipped_config

SCHEDULES = Path(__file__).resolve().parents[2] / "schedules"  # ECAD's published files (copied) + demo
FILES = sorted(SCHEDULES.rglob("*.json"))  # every file, no filter: each must be classified below

# The model each file's metrics were counted for; the longest matching path prefix wins.
MODEL_OF_PREFIX = {
    "alpha_cache_schedules/": "pixart-alpha-256",
    "sigma_cache_schedules/": "pixart-sigma-256",
    "flux_cache_schedules/": "flux-dev",
    "schedules_in_paper/pixart_alpha_256/": "pixart-alpha-256",
    "schedules_in_paper/pixart_alpha_ablations/": "pixart-alpha-256",
    "schedules_in_paper/pixart_alpha_to_sigma_transfer/pixart_alpha_": "pixart-alpha-256",
    "schedules_in_paper/pixart_alpha_to_sigma_transfer/pixart_sigma_": "pixart-sigma-256",
    "schedules_in_paper/pixart_sigma_256/": "pixart-sigma-256",
    "schedules_in_paper/flux_256/": "flux-dev",
    "schedules_in_paper/flux_256_to_1024/": "flux-dev",
    "demo/": "demo",  # the project's own baselines (`schedule make`) and searched/ (benchmarks/schedule_search.py)
}
# Files per model in the copy: a family whose folder vanishes or stops matching fails the count.
EXPECTED_COUNTS = {"pixart-alpha-256": 36, "pixart-sigma-256": 4, "flux-dev": 26, "demo": 13}


def _rel(path: Path) -> str:
    return path.relative_to(SCHEDULES).as_posix()


def model_of(path: Path) -> str | None:
    """The model a schedule file was published for (None: no rule covers it)."""
    rel = _rel(path)
    matches = [prefix for prefix in MODEL_OF_PREFIX if rel.startswith(prefix)]
    return MODEL_OF_PREFIX[max(matches, key=len)] if matches else None


def _spec_for(schedule, name):
    """The model's spec at the image size the schedule's `config` names (FLUX 1024² files)."""
    spec = resolve_spec(name)
    height = (schedule.config or {}).get("height")
    return spec.at_size(height, (schedule.config or {}).get("width", height)) if height else spec


def test_every_schedule_file_is_checked_and_no_family_is_left_out():
    unclassified = [_rel(p) for p in FILES if model_of(p) is None]
    assert not unclassified, f"no model rule for {unclassified}: add one to MODEL_OF_PREFIX"
    assert Counter(model_of(p) for p in FILES) == EXPECTED_COUNTS


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_published_totals_and_steps_match_exactly_in_ecad_convention(path):
    model = model_of(path)
    assert model is not None, f"{_rel(path)}: no model rule, so its metrics would go unchecked"
    schedule = load_schedule(path)
    report = schedule_mac_report(schedule, _spec_for(schedule, model), convention="ecad")
    published = schedule.metrics
    assert report.total == published["total_macs"]
    assert report.by_step == {k: v["macs"] for k, v in published["by_inference_step"].items()}
    assert report.convention == "ecad"
    assert report.text_tokens == {"pixart-alpha-256": 120, "pixart-sigma-256": 120, "flux-dev": 512, "demo": 16}[model]


def _sigma_text_token_macs(path: Path) -> int:
    """MACs one text token costs over a PixArt-XL-2 run, by hand from the schedule JSON.

    Per sample and step the caption projection (4096 -> 1152 -> 1152) runs once; every attn2
    that is computed (true, or not computed before) projects keys and values (2 x 1152 x 1152).
    ECAD's batch is 2 (CFG). None of ECAD's Σ files uses TGATE, which would halve the batch.
    """
    d, caption, samples = 1152, 4096, 2
    steps = json.loads(path.read_text())["cache_schedule"]["schedule"]
    total, computed = 0, set()
    for step in sorted(steps):
        attn2 = 0
        for block, entry in steps[step].items():
            if entry["attn2"] or block not in computed:
                computed.add(block)
                attn2 += 1
        total += samples * (caption * d + d * d + attn2 * 2 * d * d)
    return total


def test_sigma_files_are_all_found():
    assert [_rel(p) for p in FILES if model_of(p) == "pixart-sigma-256"] == [
        "schedules_in_paper/pixart_alpha_to_sigma_transfer/pixart_sigma_from_alpha_gen_200.json",
        "schedules_in_paper/pixart_alpha_to_sigma_transfer/pixart_sigma_from_alpha_gen_250.json",
        "schedules_in_paper/pixart_sigma_256/ours_fast.json",
        "sigma_cache_schedules/gen_default/default.json",
    ]


@pytest.mark.parametrize("path", [p for p in FILES if model_of(p) == "pixart-sigma-256"], ids=_rel)
def test_sigma_model_convention_adds_exactly_the_180_text_tokens_ecad_left_out(path):
    schedule = load_schedule(path)
    spec = shipped_spec("pixart-sigma-256")
    config = shipped_config("pixart-sigma-256")["transformer"]
    assert config["caption_channels"] == 4096 and config["num_attention_heads"] * config["attention_head_dim"] == 1152
    assert (spec.text_len, spec.ecad_text_len) == (300, 120) and conventions_differ(spec)
    model = schedule_macs(schedule, spec, convention="model")
    ecad = schedule_macs(schedule, spec, convention="ecad")
    assert ecad == schedule.metrics["total_macs"]
    assert model - ecad == (300 - 120) * _sigma_text_token_macs(path)
    assert 0.087 < model / ecad - 1 < 0.102  # the 8.7-10.1 % the old single count hid
    assert schedule_macs(schedule, spec) == model  # the default is the real cost


def test_alpha_flux_and_demo_conventions_coincide():
    for name in ("pixart-alpha-256", "flux-dev", "demo"):
        assert not conventions_differ(resolve_spec(name))
    schedule = load_schedule(SCHEDULES / "schedules_in_paper/pixart_alpha_256/ours_fast.json")
    spec = shipped_spec("pixart-alpha-256")
    assert schedule_macs(schedule, spec, convention="model") == schedule_macs(schedule, spec, convention="ecad")
    with pytest.raises(UserError, match="--convention nope: use one of model, ecad"):
        schedule_macs(schedule, spec, convention="nope")


def test_headline_numbers_in_both_conventions():
    alpha, sigma = shipped_spec("pixart-alpha-256"), shipped_spec("pixart-sigma-256")
    totals = {
        name: schedule_macs(load_schedule(SCHEDULES / f"schedules_in_paper/pixart_alpha_256/{name}.json"), alpha) / 1e12
        for name in ("ours_fast", "ours_faster", "ours_fastest")
    }
    totals["default"] = schedule_macs(load_schedule(SCHEDULES / "alpha_cache_schedules/gen_default/default.json"), alpha) / 1e12
    assert totals == pytest.approx({"default": 5.714, "ours_fast": 2.135, "ours_faster": 1.456, "ours_fastest": 1.175},
                                   abs=5e-4)
    default = load_schedule(SCHEDULES / "sigma_cache_schedules/gen_default/default.json")
    # 20 steps x 2 samples x 180 tokens x (caption projection + 28 attn2 k/v projections)
    extra = 20 * 2 * 180 * (4096 * 1152 + 1152 * 1152 + 28 * 2 * 1152 * 1152)
    assert schedule_macs(default, sigma, convention="ecad") == 5713796136960
    assert schedule_macs(default, sigma, convention="model") == 5713796136960 + extra == 6292413480960


def _cli(*args):
    from ecad_ray_cli.main import app

    result = CliRunner().invoke(app, ["schedule", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_macs_command_names_the_convention_and_gives_both_for_sigma():
    default = SCHEDULES / "sigma_cache_schedules/gen_default/default.json"
    lines = _cli("macs", default, "--model", "pixart-sigma-256").splitlines()
    assert lines == ["6292413480960 MACs (6.292 TMACs; model convention: 300 text tokens)",
                     "5713796136960 MACs (5.714 TMACs; ecad convention: 120 text tokens)"]
    lines = _cli("macs", default, "--model", "pixart-sigma-256", "--convention", "ecad", "--by-step").splitlines()
    assert lines[:2] == ["5713796136960 MACs (5.714 TMACs; ecad convention: 120 text tokens)",
                         "6292413480960 MACs (6.292 TMACs; model convention: 300 text tokens)"]
    assert lines[2] == f"step 000 {5713796136960 // 20}"  # the default schedule's steps all cost the same
    alpha = _cli("macs", SCHEDULES / "alpha_cache_schedules/gen_default/default.json").splitlines()
    assert alpha == ["5713796136960 MACs (5.714 TMACs; model and ecad conventions agree: 120 text tokens)"]


def test_info_reports_both_conventions_beside_the_published_figure():
    path = SCHEDULES / "schedules_in_paper/pixart_sigma_256/ours_fast.json"
    info = json.loads(_cli("info", path, "--model", "pixart-sigma-256", "--json"))
    assert info["published_total_macs"] == info["ecad_total_macs"] == 1912970280960
    assert (info["published_convention"], info["macs_convention"]) == ("ecad", "model")
    assert (info["text_tokens"], info["ecad_text_tokens"]) == (300, 120)
    assert info["total_macs"] - info["ecad_total_macs"] == 180 * _sigma_text_token_macs(path)
    text = _cli("info", path, "--model", "pixart-sigma-256")
    assert "2.090 TMACs; model convention: 300 text tokens" in text
    assert "1.913 TMACs; ecad convention: 120 text tokens" in text


@pytest.mark.parametrize("pipeline, text_len", [("PixArtSigmaPipeline", 300), ("PixArtAlphaPipeline", 120), (None, 120)])
def test_a_pipeline_folder_counts_the_text_length_its_pipeline_runs(tmp_path, pipeline, text_len):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(shipped_config("pixart-sigma-256")["transformer"]))
    if pipeline:
        (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    spec = resolve_spec(str(tmp_path))
    assert (spec.text_len, spec.ecad_text_len) == (text_len, 120)
    assert conventions_differ(spec) == (text_len != 120)


def test_a_reuse_before_any_compute_is_paid_and_reuse_is_free():
    spec = shipped_spec("pixart-alpha-256")
    blocks = [str(b) for b in range(28)]
    reuse_first = {s: {b: {"attn1": s > 0, "attn2": True, "ff": True} for b in blocks} for s in range(3)}
    reuse_second = {s: {b: {"attn1": s != 1, "attn2": True, "ff": True} for b in blocks} for s in range(3)}
    full = schedule_macs(make_schedule("f", {s: {b: dict.fromkeys(("attn1", "attn2", "ff"), True) for b in blocks}
                                             for s in range(3)}, 28, 3), spec)
    assert schedule_macs(make_schedule("a", reuse_first, 28, 3), spec) == full
    saved = full - schedule_macs(make_schedule("b", reuse_second, 28, 3), spec)
    assert saved == 28 * 2 * component_macs(spec)["attn1"]


def _traced_linear_macs(model, call) -> int:
    """MACs of every Linear / Conv2d the forward really runs (shapes only, on the meta device)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Linear):
            total += inputs[0].numel() // inputs[0].shape[-1] * module.in_features * module.out_features
        else:
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * module.in_channels * k // module.groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        call()
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["pixart-alpha-256", "pixart-sigma-256", "flux-dev"])
def test_formulas_equal_a_count_over_the_shipped_architectures(name):
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel, PixArtTransformer2DModel

    spec = shipped_spec(name)
    config = shipped_config(name)["transformer"]
    cls = FluxTransformer2DModel if spec.family == "flux" else PixArtTransformer2DModel
    with init_empty_weights():
        model = cls.from_config(config)
    model = model.to("meta")
    meta = dict(device="meta")
    n, t = spec.image_tokens, spec.text_len
    if spec.family == "flux":
        def call():
            model(hidden_states=torch.randn(1, n, spec.in_channels, **meta),
                  encoder_hidden_states=torch.randn(1, t, spec.joint_attention_dim, **meta),
                  pooled_projections=torch.randn(1, spec.pooled_projection_dim, **meta),
                  timestep=torch.tensor([0.5], **meta), img_ids=torch.zeros(n, 3, **meta),
                  txt_ids=torch.zeros(t, 3, **meta), guidance=torch.tensor([5.0], **meta))
    else:
        side = spec.height // 8

        def call():
            model(torch.randn(1, spec.in_channels, side, side, **meta),
                  encoder_hidden_states=torch.randn(1, t, spec.caption_channels, **meta),
                  timestep=torch.tensor([500], **meta), added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    per = component_macs(spec)
    analytic = always_macs(spec) + sum(per[c] for b in spec.block_names for c in spec.components_of(b))
    assert _traced_linear_macs(model, call) == analytic
