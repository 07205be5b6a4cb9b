"""Model resolution and loading: registry names, local folders, hub ids offline, FLUX family."""

from __future__ import annotations

import numpy as np
import pytest

from ecad_ray.caching import load_schedule
from ecad_ray.config import GenerateConfig, ImageSettings
from ecad_ray.engine import ImageGenerator, TextEncoder
from ecad_ray.errors import UserError
from ecad_ray.models.demo import build_pipeline
from ecad_ray.models.loading import fetch_weights
from ecad_ray.models.registry import registry_names, resolve_model
from tiny_models import tiny_flux_pipeline


def test_registry_names_and_ecad_split():
    assert registry_names()[0] == "demo"
    model_spec = resolve_model("pixart-alpha-256")
    assert model_spec.transformer_source == "PixArt-alpha/PixArt-XL-2-256x256"
    assert model_spec.pipeline_source == "PixArt-alpha/PixArt-XL-2-1024-MS"
    assert (model_spec.height, model_spec.steps, model_spec.guidance_scale, model_spec.dtype) == (256, 20, 4.5, "fp16")
    assert resolve_model("pixart-sigma-256").max_sequence_length == 300
    assert resolve_model("flux-dev").family == "flux"


def test_unknown_name_lists_choices():
    with pytest.raises(UserError, match="unknown model; use one of demo, pixart-alpha-256"):
        resolve_model("not a model")


def test_missing_hub_weights_say_how_to_get_them(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="huggingface-cli download PixArt-alpha/PixArt-XL-2-1024-MS"):
        fetch_weights(resolve_model("pixart-alpha-256"))


def test_file_and_folder_without_index_are_refused(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="single file is not a pipeline"):
        resolve_model(str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match="no model_index.json"):
        resolve_model(str(tmp_path))


def test_saved_demo_folder_loads_and_draws_like_the_builtin(tmp_path):
    build_pipeline().save_pretrained(tmp_path / "demo")
    model_spec = resolve_model(str(tmp_path / "demo"))
    assert (model_spec.family, model_spec.pipeline_class, model_spec.height) == ("pixart", "PixArtAlphaPipeline", 32)
    builtin = resolve_model("demo")
    cfg = GenerateConfig(steps=3)
    images = []
    for s in (builtin, model_spec):
        enc = TextEncoder(s, "cpu")
        gen = ImageGenerator(s, ImageSettings.resolve(cfg, s), "cpu")
        images.append(gen(enc(["a red circle"], [""]), [5]))
    np.testing.assert_array_equal(images[0], images[1])


def test_flux_family_encodes_and_generates_batch_invariantly(tmp_path):
    tiny_flux_pipeline(tmp_path / "tok").save_pretrained(tmp_path / "flux")
    model_spec = resolve_model(str(tmp_path / "flux"))
    assert (model_spec.family, model_spec.max_sequence_length) == ("flux", 512)
    settings = ImageSettings.resolve(GenerateConfig(height=32, width=32, steps=3), model_spec)
    enc, gen = TextEncoder(model_spec, "cpu"), ImageGenerator(model_spec, settings, "cpu")
    emb = enc(["a red circle", "a blue square"], ["", ""])
    assert set(emb) == {"prompt_embeds", "pooled_prompt_embeds"}
    both = gen(emb, [0, 1])
    alone = [gen({k: v[i : i + 1] for k, v in emb.items()}, [i]) for i in range(2)]
    assert both.shape == (2, 32, 32, 3) and both.dtype == np.uint8
    np.testing.assert_array_equal(both, np.concatenate(alone))
    assert not np.array_equal(both[0], both[1])


def test_sizes_are_checked_against_the_model():
    with pytest.raises(UserError, match="--width 250: model pixart-alpha-256 needs a multiple of 16.*try 240 or 256"):
        ImageSettings.resolve(GenerateConfig(width=250), resolve_model("pixart-alpha-256"))


def test_transformer_weights_file_replaces_the_models_own(tmp_path):
    import dataclasses

    import torch
    from safetensors.torch import save_file

    from ecad_ray.run import plan_run

    own = build_pipeline().transformer.state_dict()
    save_file({k: v.contiguous() for k, v in own.items()}, str(tmp_path / "same.safetensors"))
    torch.save({k: v + 0.05 * torch.randn_like(v) for k, v in own.items()}, tmp_path / "tuned.pth")

    plan = plan_run(GenerateConfig(prompts=("x",), output_dir=str(tmp_path / "run"),
                                   transformer_weights=str(tmp_path / "tuned.pth")))
    assert plan.model_spec.transformer_file == str((tmp_path / "tuned.pth").resolve())

    base = resolve_model("demo")
    settings = ImageSettings.resolve(GenerateConfig(steps=3), base)
    emb = TextEncoder(base, "cpu")(["a red circle"], [""])
    images = {}
    for name in ("none", "same.safetensors", "tuned.pth"):
        model_spec = base if name == "none" else dataclasses.replace(base, transformer_file=str(tmp_path / name))
        images[name] = ImageGenerator(model_spec, settings, "cpu")(emb, [3])
    np.testing.assert_array_equal(images["none"], images["same.safetensors"])
    assert not np.array_equal(images["none"], images["tuned.pth"])


def test_transformer_weights_of_another_architecture_are_named(tmp_path):
    import dataclasses

    import torch

    torch.save({"pos_embed.proj.weight": torch.zeros(3), "unet.conv_in.weight": torch.zeros(1)}, tmp_path / "other.pt")
    model_spec = dataclasses.replace(resolve_model("demo"), transformer_file=str(tmp_path / "other.pt"))
    with pytest.raises(UserError, match=r"other.pt: not a PixArtTransformer2DModel of model demo.*missing .*unexpected unet.conv_in.weight .*wrong shape pos_embed.proj.weight"):
        ImageGenerator(model_spec, ImageSettings.resolve(GenerateConfig(), model_spec), "cpu")


def test_cpu_generation_has_no_warm_up_pass_and_still_applies_the_schedule():
    from pathlib import Path

    schedule = Path(__file__).resolve().parents[1] / "schedules" / "demo" / "recompute_all_every_002.json"
    model_spec = resolve_model("demo")
    settings = ImageSettings.resolve(GenerateConfig(), model_spec)
    emb = TextEncoder(model_spec, "cpu")(["a red circle"], [""])
    cached = ImageGenerator(model_spec, settings, "cpu", schedule=load_schedule(schedule))
    forwards = []
    cached.pipe.transformer.register_forward_pre_hook(lambda *_: forwards.append(1))
    image = cached(emb, [0])
    # one transformer call per step (CFG runs both halves in one batch): no extra 2-step pass
    assert len(forwards) == settings.steps == 20
    assert cached.cache is not None and cached.cache.stats.runs == 1
    full = ImageGenerator(model_spec, settings, "cpu")(emb, [0])
    assert not np.array_equal(image, full)  # the schedule did change the computation
