"""Loading VAR weights: project safetensors round trip and FoundationVision-layout state dicts."""

import pytest
import torch

import ecad_ray  # noqa: F401
from ecad_ray.errors import UserError
from ecad_ray.var import load_var_model
from ecad_ray.var.checkpoints import (build_models, foundation_vision_state_dicts, load_foundation_vision,
                                      save_pipeline, training_notes)
from ecad_ray.var.config import preset
from ecad_ray.var.generation import VarPipeline


@pytest.fixture(scope="module")
def pipe():
    cfg = preset("tiny")
    vqvae, var = build_models(cfg, seed=3)
    return VarPipeline(cfg, vqvae, var)


def _images(p):
    return p.generate(p.conditions(classes=[1, 2]), [0, 1]).images_B3HW


def test_safetensors_round_trip(pipe, tmp_path):
    path = tmp_path / "m.safetensors"
    save_pipeline(path, pipe.config, pipe.vqvae, pipe.var, extra={"note": "test"})
    loaded = load_var_model(str(path))
    assert loaded.config == pipe.config
    assert torch.equal(_images(loaded), _images(pipe))
    assert training_notes(path) == {"note": "test"}


def _save_fv(pipe, tmp_path, prefix=""):
    sd_var, sd_vae = foundation_vision_state_dicts(pipe)
    var_path, vae_path = tmp_path / "var_d2.pth", tmp_path / "vae_tiny.pth"
    torch.save({prefix + k: v for k, v in sd_var.items()}, var_path)
    torch.save(sd_vae, vae_path)
    return var_path, vae_path, sd_var, sd_vae


def test_foundation_vision_layout_loads_into_same_architecture(pipe, tmp_path):
    var_path, vae_path, sd_var, _ = _save_fv(pipe, tmp_path, prefix="module.")
    assert {"lvl_1L", "attn_bias_for_masking", "class_emb.weight", "blocks.0.attn.mat_qkv.weight",
            "blocks.1.ada_lin.1.weight", "head_nm.ada_lin.1.weight", "pos_1LC", "pos_start"} <= set(sd_var)
    loaded = load_foundation_vision(var_path, vae_path, base=pipe.config)
    assert loaded.config.var.patch_nums == pipe.config.var.patch_nums  # read off lvl_1L
    assert loaded.config.var.depth == 2 and loaded.config.vqvae.ch_mult == (1, 2)
    assert torch.equal(_images(loaded), _images(pipe))
    with pytest.raises(UserError, match="needs --vae"):
        load_var_model(str(var_path))


def test_mismatches_are_named(pipe, tmp_path):
    var_path, vae_path, sd_var, sd_vae = _save_fv(pipe, tmp_path)
    broken = dict(sd_var)
    broken["shared_ada_lin.1.weight"] = torch.zeros(6 * 32, 32)  # a shared-adaLN variant this code lacks
    del broken["blocks.1.ffn.fc2.bias"]
    torch.save(broken, var_path)
    with pytest.raises(UserError, match=r"missing: blocks\.1\.ffn\.fc2\.bias.*unexpected: shared_ada_lin\.1\.weight"):
        load_foundation_vision(var_path, vae_path, base=pipe.config)
    wrong = dict(sd_vae)
    wrong["quantize.embedding.weight"] = torch.zeros(64, 8)
    torch.save(sd_var, var_path)
    torch.save(wrong, vae_path)
    with pytest.raises(UserError, match="do not belong together"):
        load_foundation_vision(var_path, vae_path, base=pipe.config)
    with pytest.raises(UserError, match="not found"):
        load_foundation_vision(tmp_path / "nope.pth", vae_path)


def test_demo_weights_missing_or_present_message():
    try:
        p = load_var_model("demo-var")
    except UserError as err:
        assert "ecad-ray var train" in str(err)
    else:
        assert p.config.name == "demo-var" and p.config.image_size == 16
