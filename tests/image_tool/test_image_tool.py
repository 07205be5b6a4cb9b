"""`ecad_ray.image_tool` on tiny saved pipelines: defaults, rounding, schedulers, memory, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_image_models import build_model_zoo, build_sd_pipeline, save_folder

from ecad_ray.errors import UserError
from ecad_ray.image_tool import ImageOptions, generate_image, parse_size, report_lines
from ecad_ray.image_tool.defaults import resolve_sampling, turbo_evidence
from ecad_ray.image_tool.loader import load_model
from ecad_ray.image_tool.memory import apply_memory_settings
from ecad_ray.image_tool.schedulers import swap_scheduler
from ecad_ray.peak_memory import KIND_RSS_WINDOW

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return build_model_zoo(tmp_path_factory.mktemp("image_models"))


def run(tmp_path, model, **kw):
    """Generate with small settings; returns (report, emitted lines, image as an array)."""
    lines: list[str] = []
    options = ImageOptions(model=str(model), prompt=kw.pop("prompt", "a red cat"), out=tmp_path / kw.pop("name", "out.png"), **kw)
    report = generate_image(options, emit=lines.append)
    return report, lines, np.asarray(Image.open(options.out))


# --- size, options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected, rounded",
    [("512x512", (512, 512), False), ("513x700", (512, 704), True), ("1000X3", (1000, 8), True),
     (" 20 x 12 ", (24, 16), True)],
)
def test_size_rounds_to_multiples_of_8(text, expected, rounded):
    width, height, note = parse_size(text)
    assert (width, height) == expected
    if rounded:
        assert f"rounded to {width}x{height} (multiples of 8)" in note
    else:
        assert note is None


@pytest.mark.parametrize("text", ["abc", "512", "0x512", "512x-8", "8x8x8", "12.5x8", ""])
def test_malformed_size_is_a_user_error(text):
    with pytest.raises(UserError, match="^--size"):
        parse_size(text)


@pytest.mark.parametrize(
    "field, value, option",
    [("scheduler", "ddim", "--scheduler"), ("dtype", "int8", "--dtype"), ("out", "x.pdfx", "--out"),
     ("steps", 0, "--steps"), ("size", "big", "--size"), ("schedule", "/no/such.json", "--schedule")],
)
def test_options_are_checked_before_loading(field, value, option):
    with pytest.raises(UserError, match=f"^{option}"):
        ImageOptions(model="demo", prompt="x", **{field: value})


# --- end to end on the tiny SD-style pipeline -------------------------------------------------


def test_sd_pipeline_report_and_image(zoo, tmp_path):
    report, lines, image = run(tmp_path, zoo["sd"], steps=2, seed=7)
    assert image.shape == (16, 16, 3)  # native: UNet sample_size 8 x VAE factor 2
    assert (report.pipeline, report.scheduler, report.dtype) == ("StableDiffusionPipeline", "PNDMScheduler", "fp32")
    assert (report.steps, report.cfg, report.turbo) == (2, 7.5, False)
    assert report.vae_slicing and not report.attention_slicing and not report.offload
    assert lines == report_lines(report)  # what was printed is what the report says
    assert lines[0].startswith(f"torch {torch.__version__}")
    assert lines[1] == "Device: CPU"
    assert "Generating: 16x16, steps=2, cfg=7.5, seed=7" in lines
    assert lines[-1] == f"Saved -> {tmp_path / 'out.png'}"
    assert 0 < report.load_seconds < report.total_seconds
    assert 0 < report.generation_seconds < report.total_seconds
    assert report.peak_memory_kind == KIND_RSS_WINDOW
    assert 0 < report.memory_before_load_bytes <= report.peak_memory_bytes
    data = json.loads(report.to_json())
    assert data["width"] == 16 and data["seed"] == 7 and data["environment"]["device"] == "CPU"


_MEMORY_PROBE = """
import json, sys
from ecad_ray.image_tool import ImageOptions, generate_image
report = generate_image(ImageOptions(model=sys.argv[1], prompt="a red cat", out=sys.argv[2], steps=1, seed=0))
print(json.dumps({"before": report.memory_before_load_bytes, "peak": report.peak_memory_bytes,
                  "kind": report.peak_memory_kind}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the windowed RSS peak is Linux-only")
def test_peak_memory_rises_by_the_model_size_in_a_fresh_process(tmp_path):
    """Loading a 64 MiB model raises the peak by at least that much over the before figure.

    A fresh interpreter, so nothing that ran earlier in the test process can hide or fake the
    rise; the report's own before/peak pair is what is checked.
    """
    pipe = build_sd_pipeline(tmp_path / "vocab", text_vocab_size=500_000)  # 16M params in fp32
    model_bytes = sum(p.numel() * p.element_size() for c in (pipe.text_encoder, pipe.unet, pipe.vae)
                      for p in c.parameters())
    assert model_bytes > 60 * 2**20
    folder = save_folder(pipe, tmp_path / "heavy")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(folder), str(tmp_path / "m.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["kind"] == KIND_RSS_WINDOW
    assert figures["peak"] - figures["before"] >= model_bytes


def test_same_options_same_image_and_seed_matters(zoo, tmp_path):
    _, _, first = run(tmp_path, zoo["sd"], steps=2, seed=3, name="a.png")
    _, _, again = run(tmp_path, zoo["sd"], steps=2, seed=3, name="b.png")
    _, _, other = run(tmp_path, zoo["sd"], steps=2, seed=4, name="c.png")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_size_option_rounds_and_says_so(zoo, tmp_path):
    report, lines, image = run(tmp_path, zoo["sd"], steps=1, size="25x15")
    assert image.shape == (16, 24, 3)
    assert "note: --size 25x15 rounded to 24x16 (multiples of 8)" in lines


def test_default_steps_and_cfg_for_plain_and_turbo_models(zoo):
    plain = load_model(str(zoo["sd"]), "auto", CPU)
    options = ImageOptions(model=str(zoo["sd"]), prompt="x")
    sampling, _ = resolve_sampling(options, plain.model_spec, plain.registry, plain.pipe, turbo=False)
    assert (sampling.steps, sampling.cfg, sampling.width, sampling.height) == (30, 7.5, 16, 16)
    assert turbo_evidence(str(zoo["sd"]), zoo["sd"]) is None
    assert "Turbo" in turbo_evidence("stabilityai/sdxl-turbo", None)
    assert "_name_or_path=stabilityai/sd-turbo" in turbo_evidence(str(zoo["turbo"]), zoo["turbo"])


def test_turbo_folder_runs_4_steps_without_guidance(zoo, tmp_path):
    report, lines, _ = run(tmp_path, zoo["turbo"])
    assert (report.steps, report.cfg, report.turbo) == (4, 0.0, True)
    assert any(line.startswith("note: Turbo-style model") for line in lines)
    report, _, _ = run(tmp_path, zoo["turbo"], steps=1, cfg=2.0)  # explicit values win
    assert (report.steps, report.cfg) == (1, 2.0)


def test_registry_model_keeps_its_own_defaults(tmp_path):
    report, lines, image = run(tmp_path, "demo", prompt="a red circle")
    assert (report.steps, report.cfg, report.width, report.height) == (20, 4.5, 32, 32)
    assert image.shape == (32, 32, 3)
    assert "Generating: 32x32, steps=20, cfg=4.5, seed=42" in lines


def test_negative_prompt_steers_the_image(zoo, tmp_path):
    _, _, plain = run(tmp_path, zoo["sd"], steps=2, name="a.png")
    _, _, steered = run(tmp_path, zoo["sd"], steps=2, negative_prompt="blue dog", name="b.png")
    assert not np.array_equal(plain, steered)


def test_negative_prompt_where_the_pipeline_takes_none():
    from types import SimpleNamespace

    from ecad_ray.image_tool.run import _call_kwargs

    class NoNegativePipeline:
        def __call__(self, prompt, num_inference_steps, guidance_scale, height, width, output_type, generator):
            """A pipeline signature without negative_prompt (as some distilled models have)."""

    options = ImageOptions(model="demo", prompt="x", negative_prompt="y")
    sampling = SimpleNamespace(steps=1, cfg=1.0, height=8, width=8)
    with pytest.raises(UserError, match="^--negative-prompt: NoNegativePipeline takes no negative prompt"):
        _call_kwargs(NoNegativePipeline(), options, SimpleNamespace(registry=False), sampling)


# --- schedulers ---------------------------------------------------------------------------------


def test_scheduler_swap_clones_the_config(zoo):
    pipe = load_model(str(zoo["sd"]), "auto", CPU).pipe
    original = dict(pipe.scheduler.config)
    assert swap_scheduler(pipe, "auto", "m") == "PNDMScheduler"
    assert swap_scheduler(pipe, "dpm", "m") == "DPMSolverMultistepScheduler"
    assert pipe.scheduler.config.use_karras_sigmas is True
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset"):
        assert pipe.scheduler.config[key] == original[key]
    assert swap_scheduler(pipe, "euler_a", "m") == "EulerAncestralDiscreteScheduler"
    assert pipe.scheduler.config.beta_end == original["beta_end"]
    with pytest.raises(UserError, match="^--scheduler foo"):
        swap_scheduler(pipe, "foo", "m")


def test_flow_matching_models_refuse_a_swap():
    from diffusers import FlowMatchEulerDiscreteScheduler

    class FlowPipe:
        scheduler = FlowMatchEulerDiscreteScheduler()

    with pytest.raises(UserError, match="flow-matching"):
        swap_scheduler(FlowPipe(), "dpm", "tiny-flux")
    assert swap_scheduler(FlowPipe(), "auto", "tiny-flux") == "FlowMatchEulerDiscreteScheduler"


def test_euler_a_run_differs_from_the_models_own(zoo, tmp_path):
    own, _, own_image = run(tmp_path, zoo["sd"], steps=2, name="own.png")
    swapped, _, euler_image = run(tmp_path, zoo["sd"], steps=2, scheduler="euler_a", name="eu.png")
    assert swapped.scheduler == "EulerAncestralDiscreteScheduler"
    assert not np.array_equal(own_image, euler_image)


# --- memory -------------------------------------------------------------------------------------


def test_attention_slicing_installs_sliced_processors(zoo):
    pipe = load_model(str(zoo["sd"]), "auto", CPU).pipe
    settings, notes = apply_memory_settings(pipe, attn_slicing=True, offload=False, device=CPU)
    assert settings.attention_slicing and settings.vae_slicing and not notes
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    assert pipe.vae.use_slicing


def test_offload_on_cpu_falls_back_and_says_so(zoo, tmp_path):
    report, lines, _ = run(tmp_path, zoo["sd"], steps=1, offload=True)
    assert not report.offload and report.attention_slicing  # offload implies slicing
    assert any("needs an accelerator" in line for line in lines if line.startswith("note: --offload"))


def test_pixart_folder_without_sliceable_attention(zoo, tmp_path):
    report, lines, image = run(tmp_path, zoo["pixart"], steps=2, attn_slicing=True)
    assert report.pipeline == "PixArtAlphaPipeline" and image.shape == (32, 32, 3)
    assert (report.steps, report.cfg) == (2, 7.5) and not report.attention_slicing
    assert any("no component of PixArtAlphaPipeline supports it" in line for line in lines)


# --- dtype and weight variants ---------------------------------------------------------------


def test_fp16_picks_the_fp16_variant_when_present(zoo):
    with_variant = load_model(str(zoo["sd_fp16"]), "fp16", CPU)
    assert with_variant.variant == "fp16" and with_variant.pipe.unet.dtype == torch.float16
    without = load_model(str(zoo["sd"]), "fp16", CPU)
    assert without.variant is None and without.pipe.unet.dtype == torch.float16
    assert any("no fp16 weight variant" in n for n in without.notes)
    assert load_model(str(zoo["sd"]), "auto", CPU).pipe.unet.dtype == torch.float32  # CPU: fp32


# --- models that are not text-to-image, or not there ------------------------------------------


@pytest.mark.parametrize(
    "role, message",
    [("inpaint", "StableDiffusionInpaintPipeline is an inpainting pipeline"),
     ("img2img", "StableDiffusionImg2ImgPipeline is an image-to-image pipeline"),
     ("unet_only", "no model_index.json")],
)
def test_non_text_to_image_models_are_refused(zoo, role, message):
    with pytest.raises(UserError, match=message):
        load_model(str(zoo[role]), "auto", CPU)


def test_uncached_hub_id_offline_names_the_fix():
    with pytest.raises(UserError, match="huggingface-cli download nobody/no-such-model") as info:
        load_model("nobody/no-such-model", "auto", CPU)
    assert "\n" not in str(info.value)


def test_registry_model_without_cached_weights_names_the_fix():
    with pytest.raises(UserError, match="pixart-alpha-256.*huggingface-cli download"):
        load_model("pixart-alpha-256", "auto", CPU)


def test_schedule_on_a_unet_model_is_refused(zoo, tmp_path):
    schedule = tmp_path / "schedule.json"
    schedule.write_text("{}")
    with pytest.raises(UserError, match="^--schedule .*diffusion transformers"):
        run(tmp_path, zoo["sd"], steps=1, schedule=schedule)


# --- ECAD caching schedules ------------------------------------------------------------------


def test_schedule_caches_the_pixart_transformer(zoo, tmp_path):
    from ecad_ray import caching
    from ecad_ray.caching.baselines import default_schedule, fora_schedule

    pipe = load_model(str(zoo["pixart"]), "auto", CPU).pipe
    spec = caching.spec_from_transformer(pipe.transformer, height=32, width=32, text_len=16)
    everything = caching.save_schedule(default_schedule(spec, 4), tmp_path / "all.json")
    every_2nd = caching.save_schedule(fora_schedule(spec, 4, 2), tmp_path / "fora2.json")

    _, _, plain = run(tmp_path, zoo["pixart"], steps=4, name="plain.png")
    full, _, same = run(tmp_path, zoo["pixart"], schedule=everything, name="all.png")
    cached, lines, reused = run(tmp_path, zoo["pixart"], schedule=every_2nd, name="fora.png")
    assert full.steps == 4 and full.cache["reused"] == 0 and np.array_equal(plain, same)
    assert cached.cache["reused"] > 0 and not np.array_equal(plain, reused)
    assert cached.schedule == str(every_2nd) and any(line.startswith("Cache: reused") for line in lines)
    with pytest.raises(UserError, match="^--steps 3: the caching schedule"):
        run(tmp_path, zoo["pixart"], steps=3, schedule=every_2nd)


@pytest.mark.gpu
def test_offload_and_cuda_peak_memory_on_a_gpu(zoo, tmp_path):
    report, lines, first = run(tmp_path, zoo["sd"], steps=2, offload=True, name="a.png")
    assert report.offload and report.attention_slicing and report.dtype in ("bf16", "fp16")
    assert report.peak_memory_kind == "torch.cuda.max_memory_allocated" and report.peak_memory_bytes > 0
    assert report.environment["compute_capability"] and lines[1].startswith("GPU: ")
    _, _, again = run(tmp_path, zoo["sd"], steps=2, offload=True, name="b.png")
    assert np.array_equal(first, again)  # generator on the GPU, same seed


def test_flux_folder_keeps_its_flow_matching_sampler(tmp_path):
    from tiny_models import tiny_flux_pipeline

    folder = tmp_path / "flux"
    tiny_flux_pipeline(tmp_path).save_pretrained(folder)
    report, lines, image = run(tmp_path, folder, steps=2, size="32x32")
    assert (report.pipeline, report.scheduler) == ("FluxPipeline", "FlowMatchEulerDiscreteScheduler")
    assert image.shape == (32, 32, 3)
    with pytest.raises(UserError, match="^--scheduler dpm: .*flow-matching"):
        run(tmp_path, folder, steps=2, size="32x32", scheduler="dpm")
