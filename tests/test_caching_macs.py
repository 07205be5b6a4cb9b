"""Analytic MACs: agree with ECAD's published totals and with a count over real module shapes."""

from pathlib import Path

import pytest
import torch

from ecad_ray.caching import load_schedule, schedule_mac_report, schedule_macs, shipped_spec
from ecad_ray.caching.macs import always_macs, component_macs
from ecad_ray.caching.schedule import make_schedule
from ecad_ray.caching.spec import shipped_config

ECAD = Path(__file__).resolve().parents[1] / "schedules"  # ECAD's published schedules, copied
PIXART_ALPHA = sorted(
    p for p in ECAD.rglob("*.json") if "flux" not in str(p) and "sigma" not in str(p) and "demo" not in p.parts
)
FLUX = sorted(p for p in ECAD.rglob("*.json") if "flux" in str(p))


def _spec_for(schedule, name):
    spec = shipped_spec(name)
    height = (schedule.config or {}).get("height")
    return spec.at_size(height, height) if height else spec


@pytest.mark.parametrize("path", PIXART_ALPHA + FLUX, ids=lambda p: str(p.relative_to(ECAD)))
def test_total_macs_within_2_percent_of_published(path):
    schedule = load_schedule(path)
    spec = _spec_for(schedule, "flux-dev" if schedule.family == "flux" else "pixart-alpha-256")
    published = schedule.metrics["total_macs"]
    assert abs(schedule_macs(schedule, spec) / published - 1) < 0.02


def test_headline_pixart_numbers():
    spec = shipped_spec("pixart-alpha-256")
    totals = {
        name: schedule_macs(load_schedule(ECAD / f"schedules_in_paper/pixart_alpha_256/{name}.json"), spec) / 1e12
        for name in ("ours_fast", "ours_faster", "ours_fastest")
    }
    totals["default"] = schedule_macs(load_schedule(ECAD / "alpha_cache_schedules/gen_default/default.json"), spec) / 1e12
    assert totals == pytest.approx({"default": 5.714, "ours_fast": 2.135, "ours_faster": 1.456, "ours_fastest": 1.175},
                                   rel=0.01)


def test_per_step_macs_match_published_steps():
    schedule = load_schedule(ECAD / "schedules_in_paper/flux_256/ours_fast.json")
    report = schedule_mac_report(schedule, shipped_spec("flux-dev"))
    for step, value in report.by_step.items():
        assert value == pytest.approx(schedule.metrics["by_inference_step"][step]["macs"], rel=0.001)


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
