"""Schedules applied with hooks: exact against stock diffusers and against a naive oracle."""

from pathlib import Path

import pytest
import torch

from ecad_ray.caching import apply_schedule, cache_memory, load_schedule, spec_from_transformer
from ecad_ray.caching.baselines import default_schedule, fora_schedule, tgate_schedule
from ecad_ray.caching.oracle import oracle_schedule
from ecad_ray.caching.schedule import make_schedule
from ecad_ray.caching.spec import resolve_spec
from ecad_ray.caching.testing import (
    pixart_denoise,
    random_schedule,
    tiny_flux_pipeline,
    tiny_pixart_transformer,
)
from ecad_ray.errors import UserError

STEPS = 6
ECAD = str(Path(__file__).resolve().parents[2] / "schedules")  # ECAD's published schedules, copied


@pytest.fixture(scope="module")
def pixart():
    return tiny_pixart_transformer(num_layers=3)


@pytest.fixture(scope="module")
def demo_pipe():
    from ecad_ray.models.demo import build_pipeline

    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flux_pipe():
    return tiny_flux_pipeline(num_layers=2, num_single_layers=2)


def _demo_run(pipe, batch=1, guidance=4.5, steps=STEPS):
    return pipe(
        prompt=["a red circle", "a blue square on the left", "two tiny green shapes"][:batch],
        num_inference_steps=steps, guidance_scale=guidance, height=32, width=32,
        generator=torch.Generator().manual_seed(0), output_type="latent", use_resolution_binning=False,
    ).images


def _flux_run(pipe, batch=1, steps=STEPS):
    g = torch.Generator().manual_seed(3)
    return pipe(
        prompt_embeds=torch.randn(batch, 8, 32, generator=g), pooled_prompt_embeds=torch.randn(batch, 32, generator=g),
        num_inference_steps=steps, guidance_scale=5.0, height=32, width=32,
        generator=torch.Generator().manual_seed(0), output_type="latent",
    ).images


def test_all_recompute_is_bit_identical_to_stock_pixart_pipeline(demo_pipe):
    stock = _demo_run(demo_pipe)
    spec = spec_from_transformer(demo_pipe.transformer)
    with apply_schedule(demo_pipe, default_schedule(spec, STEPS)) as handle:
        cached = _demo_run(demo_pipe)
    assert torch.equal(cached, stock)
    assert handle.stats.reused == 0 and handle.stats.peak_bytes == 0


def test_all_recompute_is_bit_identical_to_stock_flux_pipeline(flux_pipe):
    stock = _flux_run(flux_pipe)
    spec = spec_from_transformer(flux_pipe.transformer)
    with apply_schedule(flux_pipe, default_schedule(spec, STEPS)):
        cached = _flux_run(flux_pipe)
    assert torch.equal(cached, stock)


@pytest.mark.parametrize("batch,guidance", [(1, 4.5), (3, 4.5), (1, 1.0), (3, 1.0)])
def test_pixart_pipeline_matches_oracle_for_random_schedules(demo_pipe, batch, guidance):
    spec = spec_from_transformer(demo_pipe.transformer)
    schedule = random_schedule(spec, STEPS, p_recompute=0.4, seed=batch * 10 + int(guidance))
    with pytest.warns(UserWarning, match="nothing cached"), apply_schedule(demo_pipe, schedule) as handle:
        hooked = _demo_run(demo_pipe, batch, guidance)
    with oracle_schedule(demo_pipe.transformer, schedule, cfg=guidance > 1):
        expected = _demo_run(demo_pipe, batch, guidance)
    stock = _demo_run(demo_pipe, batch, guidance)
    assert handle.stats.reused > 0
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(hooked, stock, atol=1e-4), "the schedule should change the output"


@pytest.mark.filterwarnings("ignore:schedule random_.*nothing cached")
@pytest.mark.parametrize("batch", [1, 3])
def test_flux_pipeline_matches_oracle_for_random_schedules(flux_pipe, batch):
    spec = spec_from_transformer(flux_pipe.transformer)
    schedule = random_schedule(spec, STEPS, p_recompute=0.4, seed=batch)
    with apply_schedule(flux_pipe, schedule) as handle:
        hooked = _flux_run(flux_pipe, batch)
    with oracle_schedule(flux_pipe.transformer, schedule, cfg=False):
        expected = _flux_run(flux_pipe, batch)
    assert handle.stats.reused > 0
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(hooked, _flux_run(flux_pipe, batch), atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("batch,cfg", [(1, True), (3, True), (1, False), (3, False)])
def test_transformer_loop_matches_oracle(pixart, seed, batch, cfg):
    schedule = random_schedule(spec_from_transformer(pixart), STEPS, p_recompute=0.3 + 0.1 * seed, seed=seed)
    with pytest.warns(UserWarning), apply_schedule(pixart, schedule):
        hooked = pixart_denoise(pixart, STEPS, batch, cfg)
    with oracle_schedule(pixart, schedule, cfg=cfg):
        expected = pixart_denoise(pixart, STEPS, batch, cfg)
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)


def test_apply_then_remove_returns_stock_output(demo_pipe):
    stock = _demo_run(demo_pipe)
    spec = spec_from_transformer(demo_pipe.transformer)
    handle = apply_schedule(demo_pipe, fora_schedule(spec, STEPS, 2))
    cached = _demo_run(demo_pipe)
    handle.remove()
    assert not torch.equal(cached, stock)
    assert torch.equal(_demo_run(demo_pipe), stock)
    assert "forward" not in vars(demo_pipe.transformer.transformer_blocks[0].attn1)
    assert "set_timesteps" not in vars(demo_pipe.scheduler)


def test_state_resets_between_pipeline_calls(demo_pipe):
    spec = spec_from_transformer(demo_pipe.transformer)
    with apply_schedule(demo_pipe, fora_schedule(spec, STEPS, 3)) as handle:
        first = _demo_run(demo_pipe, batch=1)
        _demo_run(demo_pipe, batch=3)  # another batch size in between
        second = _demo_run(demo_pipe, batch=1)
        assert handle.stats.runs == 3 and handle.stats.current_bytes == 0
    assert torch.equal(first, second)


def test_state_resets_when_timesteps_restart_without_a_pipeline(pixart):
    schedule = fora_schedule(spec_from_transformer(pixart), STEPS, 2)
    with apply_schedule(pixart, schedule) as handle:
        a = pixart_denoise(pixart, 4)  # stops before the schedule's last step
        b = pixart_denoise(pixart, 4)
        assert handle.stats.runs == 2
    assert torch.equal(a, b)


def test_step_count_mismatch_is_a_user_error(demo_pipe):
    spec = spec_from_transformer(demo_pipe.transformer)
    with apply_schedule(demo_pipe, default_schedule(spec, STEPS)):
        with pytest.raises(UserError, match="covers 6 steps but the pipeline runs 4"):
            _demo_run(demo_pipe, steps=4)


def test_wrong_model_schedule_is_refused(pixart):
    schedule = load_schedule(f"{ECAD}/alpha_cache_schedules/gen_default/default.json")
    with pytest.raises(UserError, match="num_blocks: 28, but the model has 3 blocks"):
        apply_schedule(pixart, schedule)


def test_double_apply_is_refused(pixart):
    schedule = default_schedule(spec_from_transformer(pixart), STEPS)
    with apply_schedule(pixart, schedule):
        with pytest.raises(UserError, match="already has a caching schedule"):
            apply_schedule(pixart, schedule)


def _first_blocks(schedule, n_blocks, steps):
    """A real ECAD schedule cut down to the first `n_blocks` blocks and `steps` steps."""
    bits = {s: {str(b): {c: schedule.recompute(s, str(b), c) for c in ("attn1", "attn2", "ff")}
                for b in range(n_blocks)} for s in range(steps)}
    return make_schedule(schedule.name, bits, n_blocks, steps)


@pytest.mark.parametrize("path", [
    "schedules_in_paper/pixart_alpha_256/ours_fast.json",
    "alpha_cache_schedules/gen_tgate/tgate_m_010_sp_003_fi_001_warmup_002.json",
])
def test_liveness_peak_matches_analytic(pixart, path):
    real = load_schedule(f"{ECAD}/{path}")
    schedule = _first_blocks(real, 3, 20)
    spec = spec_from_transformer(pixart)
    with apply_schedule(pixart, schedule) as handle:
        pixart_denoise(pixart, 20, batch=2, cfg=True)
    report = cache_memory(schedule, spec, batch=4, bytes_per_element=4)
    assert handle.peak_cache_bytes == report.peak_bytes
    assert 0 < report.mean_bytes < report.keep_all_bytes


def test_liveness_beats_keep_everything_on_a_real_tgate_schedule():
    schedule = load_schedule(f"{ECAD}/alpha_cache_schedules/gen_tgate/tgate_m_010_sp_003_fi_001_warmup_002.json")
    report = cache_memory(schedule, resolve_spec("pixart-alpha-256"), batch=2, bytes_per_element=2)
    assert report.peak_bytes * 3 == report.keep_all_bytes  # one of three sub-layers held at once


def test_lower_cache_dtype_halves_memory_and_stays_close(pixart):
    schedule = fora_schedule(spec_from_transformer(pixart), STEPS, 3)
    with apply_schedule(pixart, schedule) as full:
        a = pixart_denoise(pixart, STEPS)
    with apply_schedule(pixart, schedule, cache_dtype=torch.bfloat16) as low:
        b = pixart_denoise(pixart, STEPS)
    assert low.peak_cache_bytes * 2 == full.peak_cache_bytes
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)


def test_tgate_matches_oracle_and_drops_cfg_after_gate(pixart):
    spec = spec_from_transformer(pixart)
    schedule = tgate_schedule(spec, 8, gate_step=4, sp_interval=2, warmup=1)
    outputs = []

    def record(module, args, kwargs, out):
        outputs.append(out[0])

    hook = pixart.register_forward_hook(record, with_kwargs=True)
    try:
        with apply_schedule(pixart, schedule) as handle:
            hooked = pixart_denoise(pixart, 8, batch=2, cfg=True)
    finally:
        hook.remove()
    with oracle_schedule(pixart, schedule, cfg=True):
        expected = pixart_denoise(pixart, 8, batch=2, cfg=True)
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)
    for step, out in enumerate(outputs):
        uncond, cond = out.chunk(2)
        assert torch.equal(uncond, cond) == (step >= 4), f"step {step}"
    # TGATE's cross-attention cache holds the average of the halves: half the batch after the gate
    assert handle.stats.empty_cache_recomputes == 0


def test_tgate_without_cfg_keeps_the_batch(pixart):
    schedule = tgate_schedule(spec_from_transformer(pixart), 8, gate_step=4)
    with apply_schedule(pixart, schedule):
        hooked = pixart_denoise(pixart, 8, batch=2, cfg=False)
    with oracle_schedule(pixart, schedule, cfg=False):
        expected = pixart_denoise(pixart, 8, batch=2, cfg=False)
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)


DEMO_DIR = Path(__file__).resolve().parents[2] / "schedules" / "demo"
DEMO_SCHEDULES = sorted(DEMO_DIR.glob("*.json")) + sorted((DEMO_DIR / "searched").glob("*.json"))  # + the search's


def test_the_demo_baselines_are_shipped():
    names = {p.stem for p in DEMO_SCHEDULES}
    assert {"default", "recompute_all_every_002", "recompute_all_every_003"} <= names and len(names) >= 5
    assert len([p for p in DEMO_SCHEDULES if p.parent.name == "searched"]) >= 2  # benchmarks/schedule_search.py --ship


@pytest.mark.parametrize("path", DEMO_SCHEDULES, ids=lambda p: p.stem)
def test_each_demo_baseline_does_what_its_file_says_on_the_demo_model(demo_pipe, path):
    """Output equals the naive oracle of the same schedule, the cache serves exactly the
    schedule's `false` entries, and only the all-`true` default leaves the pixels as they were."""
    schedule = load_schedule(path)
    spec = resolve_spec("demo")
    assert schedule.num_blocks == spec.num_blocks == spec_from_transformer(demo_pipe.transformer).num_blocks
    steps = schedule.num_inference_steps
    with apply_schedule(demo_pipe, schedule) as handle:
        hooked = _demo_run(demo_pipe, steps=steps)
    with oracle_schedule(demo_pipe.transformer, schedule, cfg=True):
        expected = _demo_run(demo_pipe, steps=steps)
    entries = [schedule.recompute(step, b, c) for step in range(steps) for b in schedule.blocks()
               for c in schedule.components(b)]
    assert handle.stats.runs == 1
    assert (handle.stats.computed, handle.stats.reused) == (entries.count(True), entries.count(False))
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)
    stock = _demo_run(demo_pipe, steps=steps)
    assert torch.equal(hooked, stock) == all(entries)


@pytest.mark.filterwarnings("ignore:schedule random_.*nothing cached")
def test_flux_single_blocks_skip_unconsumed_outputs_exactly(flux_pipe):
    from ecad_ray.caching.spec import spec_from_config

    spec = spec_from_config(dict(flux_pipe.transformer.config), 32, 32, text_len=8, vae_scale_factor=2)
    schedule = random_schedule(spec, STEPS, p_recompute=0.5, seed=11)
    with apply_schedule(flux_pipe, schedule) as handle:
        hooked = _flux_run(flux_pipe, batch=2)
    with oracle_schedule(flux_pipe.transformer, schedule, cfg=False):
        expected = _flux_run(flux_pipe, batch=2)
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)
    assert handle.stats.skipped_unconsumed > 0
    report = cache_memory(schedule, spec, batch=2, bytes_per_element=4, cfg=False)
    assert handle.peak_cache_bytes == report.peak_bytes < report.keep_all_bytes


def test_remove_restores_another_librarys_forward_wrapper(pixart):
    calls = []
    attn1 = pixart.transformer_blocks[0].attn1
    stock = attn1.forward

    def other_hook(*args, **kwargs):  # e.g. accelerate's offloading sets an instance forward
        calls.append(1)
        return stock(*args, **kwargs)

    attn1.forward = other_hook
    try:
        schedule = fora_schedule(spec_from_transformer(pixart), STEPS, 2)
        with apply_schedule(pixart, schedule):
            pixart_denoise(pixart, STEPS)
        assert len(calls) == STEPS // 2  # ran through the other hook on computed steps only
        assert vars(attn1)["forward"] is other_hook
    finally:
        del attn1.forward
