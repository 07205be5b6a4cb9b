"""Loading VAR weights: project safetensors round trip and FoundationVision-layout state dicts.

The `tests/data/foundationvision/` fixture is a tiny model written by FoundationVision/VAR's own
`models/` package, with the logits, reconstruction and seeded tokens their code computes (see
its README.md); the tests load it by path and compare against those outputs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ecad_ray  # noqa: F401
from ecad_ray.errors import UserError
from ecad_ray.var import load_var_model
from ecad_ray.var import generation as generation_module
from ecad_ray.var.checkpoints import (build_models, foundation_vision_state_dicts, load_foundation_vision,
                                      load_foundation_vision_vqvae, load_safetensors, save_pipeline, training_notes)
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
        p = load_var_model("demo-var-digits")
    except UserError as err:
        assert "ecad-ray var train" in str(err)
    else:
        assert p.config.name == "demo-var-digits" and p.config.image_size == 16


# ---- FoundationVision's own files (tests/data/foundationvision) -------------------------------
FV = Path(__file__).resolve().parents[1] / "data" / "foundationvision"
FV_VAR, FV_VAE = FV / "var_d2.pth", FV / "vae_ch32v64z8.pth"


@pytest.fixture(scope="module")
def golden():
    return load_file(str(FV / "golden.safetensors")), json.loads((FV / "golden.json").read_text())


@pytest.fixture(scope="module")
def fv_pipe():
    return load_var_model(str(FV_VAR), vae=str(FV_VAE))


def test_foundation_vision_files_load_by_path_with_their_keys_and_buffers(fv_pipe):
    cfg = fv_pipe.config
    assert (cfg.var.depth, cfg.var.embed_dim, cfg.var.num_heads, cfg.var.mlp_ratio) == (2, 32, 2, 4.0)
    assert cfg.var.patch_nums == (1, 2, 3, 4, 6) and cfg.var.num_classes == 10 and cfg.var.attn_l2_norm
    vq = cfg.vqvae
    assert (vq.ch, vq.ch_mult, vq.num_res_blocks, vq.z_channels, vq.vocab_size, vq.share_quant_resi) == (32, (1, 1), 1, 8, 64, 4)
    for module, path in ((fv_pipe.var, FV_VAR), (fv_pipe.vqvae, FV_VAE)):
        theirs = torch.load(path, map_location="cpu", weights_only=True)
        ours = module.state_dict()
        assert sorted(ours) == sorted(theirs)  # the same names, buffers included
        for k, v in theirs.items():
            if k == "quantize.ema_vocab_hit_SV":  # training statistics of 10 scales; the model has its 5 (as theirs)
                assert ours[k].shape == (5, 64) and v.shape == (10, 64)
                continue
            assert ours[k].shape == v.shape and torch.equal(ours[k], v.to(ours[k].dtype)), k
        if module is fv_pipe.var:
            assert {"lvl_embed.weight", "lvl_1L", "attn_bias_for_masking", "blocks.1.attn.zero_k_bias"} <= set(theirs)
    folder = load_var_model(str(FV))  # a folder with one var_d*.pth and one vae_*.pth
    assert folder.config.var == cfg.var


def test_foundation_vision_logits_match_their_forward(fv_pipe, golden):
    g, _ = golden
    var, quant = fv_pipe.var, fv_pipe.vqvae.quantize
    idx = [g[f"teacher.idx_Bl.{si}"] for si in range(len(fv_pipe.patch_nums))]
    with torch.no_grad():
        x_BLCv = quant.teacher_inputs(idx)
        torch.testing.assert_close(x_BLCv, g["teacher.x_BLCv_wo_first_l"], atol=1e-6, rtol=0)
        logits = var(var.cond_embed(g["teacher.labels_B"]), x_BLCv)
    torch.testing.assert_close(logits, g["teacher.logits_BLV"], atol=1e-5, rtol=0)


def test_foundation_vision_reconstruction_matches_theirs(golden, tmp_path):
    g, meta = golden
    patch_nums = tuple(meta["vae"]["v_patch_nums"])
    _, vqvae = load_foundation_vision_vqvae(FV_VAE, patch_nums)
    img = g["vqvae.image_B3HW"]
    with torch.no_grad():
        idx = vqvae.img_to_idx(img)
        recon = vqvae.reconstruct(img)
    assert all(torch.equal(t, g[f"vqvae.idx_Bl.{si}"]) for si, t in enumerate(idx))
    torch.testing.assert_close(recon, g["vqvae.recon_B3HW"], atol=1e-5, rtol=0)
    # three Phi convs: their ticks for K != 4 differ from K == 4's
    sd = {k: v for k, v in torch.load(FV_VAE, weights_only=True).items() if ".qresi_ls.3." not in k}
    torch.save(sd, tmp_path / "vae_k3.pth")
    cfg3, vqvae3 = load_foundation_vision_vqvae(tmp_path / "vae_k3.pth", patch_nums)
    assert cfg3.share_quant_resi == 3
    with torch.no_grad():
        torch.testing.assert_close(vqvae3.reconstruct(img[:1]), g["vqvae_k3.recon_B3HW"], atol=1e-5, rtol=0)


def _sampled_tokens(pipe, monkeypatch, labels, seeds):
    drawn = []
    real = generation_module.sample_tokens

    def recording(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(generation_module, "sample_tokens", recording)
    images = pipe.generate(pipe.conditions(classes=labels), seeds).images_B3HW
    monkeypatch.setattr(generation_module, "sample_tokens", real)
    return drawn, images


def test_foundation_vision_seeded_tokens_match_autoregressive_infer_cfg(fv_pipe, golden, monkeypatch):
    g, meta = golden
    for ci, case in enumerate(meta["sampling_cases"]):
        p = fv_pipe.with_sampling(cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"])
        # one int seed: one generator for the batch, as their g_seed
        drawn, images = _sampled_tokens(p, monkeypatch, case["labels"], case["g_seed"])
        assert len(drawn) == len(p.patch_nums)
        for si, tokens in enumerate(drawn):
            assert torch.equal(tokens, g[f"sample.{ci}.idx_Bl.{si}"]), (ci, si)
        torch.testing.assert_close(images, g[f"sample.{ci}.images_B3HW"], atol=1e-5, rtol=0)
        if case["B"] == 1:  # a one-item batch: per-item seeds are the same generator
            drawn, _ = _sampled_tokens(p, monkeypatch, case["labels"], [case["g_seed"]])
            assert all(torch.equal(t, g[f"sample.{ci}.idx_Bl.{si}"]) for si, t in enumerate(drawn))


def test_foundation_vision_bad_keys_are_named_in_one_line(tmp_path):
    sd = torch.load(FV_VAR, weights_only=True)
    renamed = {("lvl_embedding.weight" if k == "lvl_embed.weight" else k): v for k, v in sd.items()}
    renamed["shared_ada_lin.1.weight"] = torch.zeros(6 * 32, 32)
    torch.save(renamed, tmp_path / "var_d2.pth")
    with pytest.raises(UserError) as err:
        load_foundation_vision(tmp_path / "var_d2.pth", FV_VAE)
    msg = str(err.value)
    assert "\n" not in msg
    assert "missing: lvl_embed.weight; unexpected: lvl_embedding.weight, shared_ada_lin.1.weight" in msg
    vae = torch.load(FV_VAE, weights_only=True)
    del vae["decoder.up.1.attn.0.proj_out.bias"]
    vae["quantize.extra"] = torch.zeros(1)
    torch.save(vae, tmp_path / "vae.pth")
    with pytest.raises(UserError, match=r"missing: decoder\.up\.1\.attn\.0\.proj_out\.bias; unexpected: quantize\.extra"):
        load_foundation_vision(FV_VAR, tmp_path / "vae.pth")


def test_uninitialised_tokenizer_weights_are_refused_not_sampled_into_nan(tmp_path, fv_pipe):
    """FoundationVision's build_vae_var() switches off reset_parameters, so a VQVAE it builds holds
    torch.empty memory (NaN, 1e35...) until a checkpoint is loaded into it; the Phi convs feed the
    next scale's input, so such a file used to end in a multinomial error on NaN probabilities."""
    vae = torch.load(FV_VAE, weights_only=True)
    w = vae["quantize.quant_resi.qresi_ls.1.weight"].float()
    w.view(-1)[0], w.view(-1)[1] = float("nan"), 3e35
    vae["quantize.quant_resi.qresi_ls.1.weight"] = w
    torch.save(vae, tmp_path / "vae.pth")
    with pytest.raises(UserError, match=r"uninitialised memory: quantize\.quant_resi\.qresi_ls\.1\.weight"):
        load_foundation_vision(FV_VAR, tmp_path / "vae.pth")
    state = fv_pipe.start(fv_pipe.conditions(classes=[1]), [0])
    state.f_hat_BChw = state.f_hat_BChw + float("nan")
    fv_pipe.step(state)  # scale 0 does not read f_hat
    with pytest.raises(UserError, match="NaN/inf logits"):
        fv_pipe.step(state)


def test_project_format_1_files_still_load(pipe, tmp_path):
    """Files written before the FoundationVision layout (`lvl_emb`, no buffers) load unchanged."""
    sd_var = {("lvl_emb.weight" if k == "lvl_embed.weight" else k): v for k, v in pipe.var.state_dict().items()
              if k != "lvl_1L" and k != "attn_bias_for_masking" and not k.endswith("zero_k_bias")}
    sd_vae = {k: v for k, v in pipe.vqvae.state_dict().items() if k != "quantize.ema_vocab_hit_SV"}
    tensors = {f"vqvae.{k}": v.contiguous() for k, v in sd_vae.items()} | {f"var.{k}": v.contiguous() for k, v in sd_var.items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"config": pipe.config.to_json(), "format": "ecad-ray-var/1"})
    assert torch.equal(_images(load_safetensors(tmp_path / "old.safetensors")), _images(pipe))
