"""Infinity (FoundationVision/Infinity) in the VAR family: their files load by path with their
key names and give their outputs; the step-wise API, pruning, skipping and FLOPs accounting
behave as the VAR family's do.

`tests/data/infinity/` holds a tiny model written by Infinity's own code with the logits,
tokenizer outputs, seeded bits and decoded images their code computes (see its README.md).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ecad_ray  # noqa: F401
from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import load_var_model
from ecad_ray.var.controllers import NoPruning, TailPattern, WidthRatios, parse_width_ratios
from ecad_ray.var.infinity.checkpoints import hub_files, load_infinity, load_infinity_model, rename_transformer_keys
from ecad_ray.var.infinity.bsq_vae import BSQVAE
from ecad_ray.var.infinity.config import BSQVAEConfig, preset, scale_schedule
from ecad_ray.var.infinity.flops import infinity_flops
from ecad_ray.var.infinity.pipeline import InfinityPipeline
from ecad_ray.var.infinity.transformer import TextStates
from ecad_ray.var.pruning import computed_tokens
from mac_counter import MacCounter

DATA = Path(__file__).resolve().parents[1] / "data" / "infinity"
MODEL, VAE = DATA / "infinity_d4.pth", DATA / "infinity_vae_d8.pth"


@pytest.fixture(scope="module")
def golden():
    return load_file(str(DATA / "golden.safetensors")), json.loads((DATA / "golden.json").read_text())


@pytest.fixture(scope="module")
def theirs() -> InfinityPipeline:
    return load_infinity(MODEL, VAE, base=preset("infinity-tiny"))


def _text(g, batch: int) -> TextStates:
    kv = g["text.kv_compact"]
    return TextStates.from_list([kv[:5], kv[5:8]][:batch])


# ---- their files and their outputs -----------------------------------------------------------
def test_their_files_load_by_path_with_their_keys(theirs):
    t, v = theirs.config.transformer, theirs.config.vae
    assert (t.depth, t.embed_dim, t.num_heads, t.ffn_hidden, t.text_channels, t.text_maxlen, t.block_chunks) == (4, 64, 2, 256, 128, 8, 2)
    assert (v.codebook_dim, v.ch, v.ch_mult, v.num_res_blocks, v.patch_size) == (8, 32, (1, 1), 1, 2)
    sd, chunks = rename_transformer_keys(torch.load(MODEL, map_location="cpu", weights_only=True))
    assert chunks == 2 and "blocks.3.sa.mat_qkv.weight" in sd  # block_chunks.1.module.1 -> blocks.3
    ours = theirs.model.state_dict()
    assert sorted(ours) == sorted(sd)
    assert all(torch.equal(ours[k], w.to(ours[k].dtype)) for k, w in sd.items())
    vae_sd = torch.load(VAE, map_location="cpu", weights_only=True)["vae"]
    assert sorted(theirs.vae.state_dict()) == sorted(vae_sd)


def test_teacher_forced_logits_match_theirs(theirs, golden):
    g, _ = golden
    with torch.no_grad():
        logits = theirs.model(_text(g, 2), g["teacher.x_BLC_wo_prefix"])
    torch.testing.assert_close(logits, g["teacher.logits_BLV"], atol=1e-4, rtol=1e-4)


def test_tokenizer_encode_bits_and_decode_match_theirs(theirs, golden):
    g, meta = golden
    assert tuple(w for _, w, _ in meta["scale_schedule"]) == theirs.patch_nums == scale_schedule("0.06M")
    with torch.no_grad():
        h, z, bits = theirs.vae.encode(g["vae.image_B3HW"], theirs.patch_nums)
        recon = theirs.vae.decode(z)
    torch.testing.assert_close(h, g["vae.h_BChw"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(z, g["vae.z_BChw"], atol=1e-5, rtol=1e-5)
    for si, b in enumerate(bits):
        assert torch.equal(b, g[f"vae.bits.{si}"][:, 0]), si
    torch.testing.assert_close(recon, g["vae.recon_B3HW"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", [0, 1, 2])
def test_seeded_inference_draws_their_bits_and_decodes_their_image(theirs, golden, case):
    g, meta = golden
    c = meta["cases"][case]
    pipe = theirs.with_sampling(cfg=c["cfg"], tau=c["tau"], top_k=c["top_k"], top_p=c["top_p"])
    state = pipe.start(_text(g, c["B"]), c["seed"])  # one seed for the batch: their g_seed
    records = [pipe.step(state) for _ in pipe.patch_nums]
    for si, r in enumerate(records):
        assert torch.equal(r.bits_Bld, g[f"sample.{case}.bits.{si}"]), f"scale {si}"
    with torch.no_grad():
        decoded = pipe.vae.decode(state.f_hat_BChw)
    torch.testing.assert_close(decoded, g[f"sample.{case}.decoded_B3HW"], atol=1e-4, rtol=1e-4)
    u8_bgr = ((decoded + 1) / 2).permute(0, 2, 3, 1).mul(255).to(torch.uint8).flip(dims=(3,))
    assert (u8_bgr.int() - g[f"sample.{case}.image_u8_BHW3_bgr"].int()).abs().max() <= 1


# ---- the VAR family's API on the tiny config -------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> InfinityPipeline:
    return load_infinity_model("infinity-tiny")


def test_tiny_preset_samples_vary_with_prompt_and_seed(tiny):
    assert tiny.config.image_size == 32 and tiny.sampling.cfg == 3.0 and tiny.sampling.top_k == 900
    cond = tiny.conditions(prompts=["a red circle", "a blue square on grass"])
    assert cond.lens == [3, 5]
    a = tiny.generate(cond, [0, 0]).images_B3HW
    b = tiny.generate(cond, [1, 1]).images_B3HW
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a[0], a[1]) and not torch.equal(a, b)


def test_unpruned_step_wise_equals_one_shot_and_items_are_batch_independent(tiny):
    cond = tiny.conditions(prompts=["a red circle", "two green birds"])
    one_shot = tiny.generate(cond, [3, 4], NoPruning())
    state = tiny.start(cond, [3, 4])
    while not tiny.done(state):
        tiny.step(state, 0.0)
    assert torch.equal(tiny.finish(state).images_B3HW, one_shot.images_B3HW)
    alone = tiny.generate(tiny.conditions(prompts=["two green birds"]), [4])
    torch.testing.assert_close(alone.images_B3HW[0], one_shot.images_B3HW[1], atol=1e-5, rtol=0)


def test_pruning_ratios_respected_and_skips_leave_the_latent(tiny):
    pipe = InfinityPipeline(tiny.config, tiny.vae, tiny.model, layer_range=(1, 4))
    cond = pipe.conditions(prompts=["a red circle"])
    ratios = [0.0, 0.0, 0.0, 0.0, 0.4, 0.5, 1.0]  # FastVAR's tail by position: prune, prune, skip
    state = pipe.start(cond, [0], keep_intermediates=True)
    for r in ratios:
        before = state.f_hat_BChw.clone()
        rec = pipe.step(state, r)
        assert rec.skipped == (r >= 1) and (rec.bits_Bld is None) == (r >= 1)
        if r >= 1:
            assert torch.equal(state.f_hat_BChw, before)
    tokens = computed_tokens(pipe.patch_nums, pipe.depth, ratios, (1, 4))
    assert tokens[4] == [64, 64 - 25, 64 - 25, 64 - 25] and tokens[6] == [0] * 4
    kv_lengths = [kv.length for kv in state.kvs]
    assert kv_lengths == [sum(row[li] for row in tokens) for li in range(pipe.depth)]  # what each layer ran, per scale
    full = pipe.generate(cond, [0]).images_B3HW
    pruned = pipe.finish(state).images_B3HW
    assert pruned.shape == full.shape and not torch.equal(pruned, full)


def test_width_ratio_strings_and_controllers_drive_the_same_steps(tiny):
    cond = tiny.conditions(prompts=["a red circle"])
    by_width = WidthRatios(parse_width_ratios("8:0.4,12:0.5,16:1", tiny.patch_nums), tiny.patch_nums)
    a = tiny.generate(cond, [5], by_width)
    b = tiny.generate(cond, [5], TailPattern((0.4, 0.5, 1.0)))
    assert a.ratios == b.ratios == [0, 0, 0, 0, 0.4, 0.5, 1.0]
    assert torch.equal(a.images_B3HW, b.images_B3HW)
    with pytest.raises(UserError, match="width 32 is not a scale"):
        parse_width_ratios("32:0.4", tiny.patch_nums)


def test_bf16_blocks_run_under_autocast_with_pruning(tiny):
    """The GPU default (`--dtype auto` = bf16 blocks) on the CPU's autocast: same code path, fp32 logits."""
    pipe = InfinityPipeline(tiny.config, tiny.vae, tiny.model, dtype=torch.bfloat16)
    cond = pipe.conditions(prompts=["a red circle", "two birds over the green sea"])  # padded text
    result = pipe.generate(cond, [0, 1], TailPattern((0.4, 0.5, 1.0, 1.0)))
    assert result.images_B3HW.dtype == torch.float32 and bool(torch.isfinite(result.images_B3HW).all())
    assert [r.skipped for r in result.records] == [False] * 5 + [True, True]


@pytest.mark.parametrize("ratios, layer_range, cfg", [
    ([0] * 7, (1, 4), 3.0),
    ([0, 0, 0, 0.5, 0.4, 0.5, 1.0], (1, 4), 3.0),
    ([0, 0.5, 0, 1.0, 0.5, 0, 0.25], (0, 2), 1.0),  # no CFG rows
])
def test_analytic_flops_equal_counted_flops_per_scale(tiny, ratios, layer_range, cfg):
    pipe = InfinityPipeline(tiny.config, tiny.vae, tiny.model, layer_range=layer_range).with_sampling(cfg=cfg)
    cond = pipe.conditions(prompts=["a red circle on grass", "two birds over the sea"])
    state = pipe.start(cond, [0, 1])
    counted = []
    for r in ratios:
        with MacCounter() as counter:
            pipe.step(state, r)
        counted.append(2.0 * counter.macs / 2)
    text_len = sum(cond.lens) / 2  # the counter sees the padded text: both prompts are 5 words
    assert cond.lens == [5, 5]
    assert counted == infinity_flops(pipe.config, ratios, layer_range, int(text_len), 2 if cfg != 1 else 1)
    assert pipe.flops(ratios, 5) == counted


def test_fastvar_setting_flops_share_on_the_2b_schedule():
    cfg = preset("infinity-2b")
    widths = cfg.transformer.scales
    assert widths == (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64) and cfg.image_size == 1024
    fastvar = WidthRatios(parse_width_ratios("32:0.4,40:0.5,48:1,64:1", widths), widths)
    ratios = [fastvar.ratio(i, len(widths)) for i in range(len(widths))]
    full = infinity_flops(cfg, [0.0] * len(widths), (3, 32))
    pruned = infinity_flops(cfg, ratios, (3, 32))
    assert 0.40 < full[-1] / sum(full) < 0.55  # the last scale holds about half (FastVAR: ~47%)
    assert pruned[-1] == pruned[-2] == 0 and pruned[-3] < full[-3]
    assert 0.2 < sum(pruned) / sum(full) < 0.4


# ---- bad input -------------------------------------------------------------------------------
def test_bad_checkpoints_are_named(tmp_path):
    sd = torch.load(MODEL, map_location="cpu", weights_only=True)
    broken = dict(sd)
    del broken["block_chunks.1.module.1.ffn.fc2.bias"]
    broken["block_chunks.0.module.0.sa.extra"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(UserError, match=r"missing: blocks\.3\.ffn\.fc2\.bias.*unexpected: blocks\.0\.sa\.extra"):
        load_infinity(path, VAE, base=preset("infinity-tiny"))
    vae_sd = torch.load(VAE, map_location="cpu", weights_only=True)["vae"]
    wrong_mask = dict(vae_sd, **{"quantizer.lfq.mask": torch.arange(8)})
    vae_path = tmp_path / "vae.pth"
    torch.save({"vae": wrong_mask}, vae_path)
    with pytest.raises(UserError, match="quantizer.lfq.mask is not the powers of two of a 8-bit code"):
        load_infinity(MODEL, vae_path, base=preset("infinity-tiny"))
    vae16 = BSQVAE(BSQVAEConfig(codebook_dim=16, ch=32, ch_mult=(1, 1), num_res_blocks=1, patch_size=2))
    torch.save({"vae": vae16.state_dict()}, vae_path)
    with pytest.raises(UserError, match="do not belong together: the transformer predicts 8-bit codes, the tokenizer has 16"):
        load_infinity(MODEL, vae_path, base=preset("infinity-tiny"))
    with pytest.raises(UserError, match="needs --vae"):
        load_var_model(str(MODEL))
    with pytest.raises(UserError, match="not found"):
        load_infinity(tmp_path / "nope.pth", VAE)


def test_plain_layouts_load_the_same_weights(tmp_path, golden):
    """`blocks.N` (block_chunks=1) transformers and plain `X.weight` tokenizer names (their
    `load_cnn` accepts both) give the same model."""
    sd, _ = rename_transformer_keys(torch.load(MODEL, map_location="cpu", weights_only=True))
    vae_sd = torch.load(VAE, map_location="cpu", weights_only=True)["vae"]
    plain = {k.replace(".conv.weight", ".weight").replace(".conv.bias", ".bias").replace(".norm.weight", ".weight")
             .replace(".norm.bias", ".bias"): v for k, v in vae_sd.items() if "lfq.mask" not in k}
    torch.save(sd, tmp_path / "m.pth")
    torch.save({"vae": plain}, tmp_path / "v.pth")
    pipe = load_var_model(str(tmp_path / "m.pth"), vae=str(tmp_path / "v.pth"))
    assert isinstance(pipe, InfinityPipeline) and pipe.config.transformer.block_chunks == 1
    g, _ = golden
    with torch.no_grad():
        logits = pipe.model(_text(g, 2), g["teacher.x_BLC_wo_prefix"])
    torch.testing.assert_close(logits, g["teacher.logits_BLV"], atol=1e-4, rtol=1e-4)


def test_missing_released_weights_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        hub_files("infinity-2b", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("infinity_2b_reg.pth", "infinity_vae_d32reg.pth", "FoundationVision/Infinity",
                 "huggingface-cli download", "--vae", "google/flan-t5-xl"):
        assert part in msg


# ---- `var generate` ---------------------------------------------------------------------------
def test_var_generate_run_with_infinity_tiny_writes_the_shared_tables(tmp_path):
    import pyarrow.parquet as pq

    from ecad_ray.var.run import VarRunOptions, generate_local, plan_var_run

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\ntwo green birds\n")
    options = VarRunOptions(model="infinity-tiny", controller="8:0.4,12:0.5,16:1", save_intermediates=True)
    rows = plan_var_run(options, prompt_file=prompts)
    configs = generate_local(rows, options, tmp_path / "run", batch_size=2)
    c = configs[0]
    assert c["ratios"] == [0, 0, 0, 0, 0.4, 0.5, 1.0] and c["skipped_widths"] == [16] and c["image_size"] == 32
    assert c["sampling"] == {"cfg": 3.0, "tau": 0.5, "top_k": 900, "top_p": 0.97}
    assert 0 < c["transformer_gflops"] < c["transformer_gflops_unpruned"]
    item = tmp_path / "run" / c["item_name"]
    assert (item / "image.png").exists() and (item / "summed_codes").is_dir()
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert [r["pruning"] for r in table] == ["8:0.4,12:0.5,16:1"] * 2 and table[0]["guidance_scale"] == 3.0
    with pytest.raises(UserError, match="rl:demo-var-digits: policy was trained for model demo-var-digits"):
        plan_var_run(VarRunOptions(model="infinity-tiny", controller="rl:demo-var-digits"), prompt_file=prompts)
    with pytest.raises(UserError, match="--dtype bf16: only Infinity models"):
        plan_var_run(VarRunOptions(model="random:tiny", dtype="bf16"), classes=[0])


@pytest.mark.gpu
def test_random_2b_generates_1024_px_in_bf16_on_cuda_with_fastvar_setting():
    """The 2B's shapes on a GPU (random weights): bf16 blocks, FastVAR's setting, one image.
    The speed figures are measured by `benchmarks/var_pruning.py --model infinity-2b`."""
    from ecad_ray.var.infinity.checkpoints import build_random

    pipe = build_random(preset("infinity-2b"), device="cuda")
    pipe.dtype = torch.bfloat16
    assert pipe.layer_range == (3, 32)
    text = TextStates(torch.randn(1, 32, 2048, device="cuda"), [32])
    result = pipe.generate(text, [0], WidthRatios(parse_width_ratios("32:0.4,40:0.5,48:1,64:1", pipe.patch_nums), pipe.patch_nums))
    assert result.images_B3HW.shape == (1, 3, 1024, 1024) and bool(torch.isfinite(result.images_B3HW).all())
    assert [r.skipped for r in result.records] == [False] * 11 + [True, True]
