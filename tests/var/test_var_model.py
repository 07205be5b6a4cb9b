"""VAR model family on tiny random-weight models: cache vs teacher forcing, step-wise vs
one-shot, determinism, pruning/skip semantics, tokenizer, sampling, controllers, FLOPs."""

import math

import pytest
import torch

import ecad_ray  # noqa: F401
from ecad_ray.errors import UserError
from ecad_ray.var import load_var_model
from ecad_ray.var.config import VarModelConfig, preset, tiny_config
from ecad_ray.var.controllers import (NoPruning, TailPattern, WidthRatios, make_controller,
                                      parse_width_ratios)
from ecad_ray.var.generation import VarPipeline
from ecad_ray.var.checkpoints import build_models
from ecad_ray.var.model import LayerKV
from ecad_ray.var.pruning import computed_tokens, pivotal_indices, restore_tokens, transformer_flops
from ecad_ray.var.sampling import candidates, filter_logits, make_generators, sample_tokens


def tiny(**var_overrides) -> VarPipeline:
    cfg = preset("tiny", **var_overrides)
    vqvae, var = build_models(cfg, seed=0)
    return VarPipeline(cfg, vqvae, var)


@pytest.fixture(scope="module")
def pipe() -> VarPipeline:
    # five scales so that pruned, skipped and later scales all occur
    return tiny(patch_nums=(1, 2, 3, 4, 6))


def test_kv_cached_scales_match_teacher_forcing(pipe):
    """Scale-by-scale with the KV cache gives the same logits as one block-causal forward pass."""
    var, quant = pipe.var, pipe.vqvae.quantize
    torch.manual_seed(1)
    idx = [torch.randint(0, quant.vocab_size, (2, pn * pn)) for pn in pipe.patch_nums]
    cond_BD = var.cond_embed(torch.tensor([3, 5]))
    with torch.no_grad():
        full_BLV = var(cond_BD, quant.teacher_inputs(idx))
        kvs = [LayerKV() for _ in var.blocks]
        mods = var.modulations(cond_BD)  # adaLN computed once, as generation does
        f_hat = torch.zeros(2, quant.Cvae, pipe.patch_nums[-1], pipe.patch_nums[-1])
        for si, (b, e) in enumerate(var.begin_ends):
            x = var.start_tokens(cond_BD) if si == 0 else var.scale_tokens(si, f_hat)
            step_BlV = var.logits(var.run_blocks(x, None, kvs, mods=mods), None, mods)
            torch.testing.assert_close(step_BlV, full_BLV[:, b:e], atol=1e-5, rtol=1e-4)
            f_hat = f_hat + quant.upsampled_codes(idx[si], si, pipe.patch_nums[-1])
    assert kvs[0].length == sum(pn * pn for pn in pipe.patch_nums)


def test_stepwise_equals_one_shot_when_unpruned(pipe):
    cond = pipe.conditions(classes=[1, 7])
    one_shot = pipe.generate(cond, [11, 12])
    state = pipe.start(cond, [11, 12])
    controller = WidthRatios({}, pipe.patch_nums)  # lists no width: nothing pruned
    while not pipe.done(state):
        pipe.step(state, controller.ratio(state.scale_index, len(pipe.patch_nums), pipe.scale_state(state)))
    stepwise = pipe.finish(state)
    assert torch.equal(stepwise.images_B3HW, one_shot.images_B3HW)
    assert stepwise.ratios == one_shot.ratios == [0.0] * 5


def test_seed_not_batch_decides_the_image(pipe):
    together = pipe.generate(pipe.conditions(classes=[2, 4, 6]), [5, 6, 7]).images_B3HW
    alone = pipe.generate(pipe.conditions(classes=[4]), [6]).images_B3HW
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=0)
    other_seed = pipe.generate(pipe.conditions(classes=[4]), [8]).images_B3HW
    assert not torch.allclose(other_seed[0], together[1])


def test_skip_leaves_scale_out_of_cache_and_latent(pipe):
    cond = pipe.conditions(classes=[3])
    state = pipe.start(cond, [0])
    for ratio in (0.0, 0.0, 0.0, 1.0):  # skip width 4
        pipe.step(state, ratio)
    assert state.records[-1].skipped and state.records[-1].seconds == 0.0
    assert state.kvs[0].length == 1 + 4 + 9
    f_before = state.f_hat_BChw.clone()
    pipe.step(state, 0.0)
    assert state.kvs[0].length == 1 + 4 + 9 + 36
    assert not torch.equal(f_before, state.f_hat_BChw)
    result = pipe.finish(state)
    assert result.ratios == [0, 0, 0, 1.0, 0]


def test_pruning_computes_fewer_tokens_and_layer_range_limits_it(pipe):
    cond = pipe.conditions(classes=[3, 8])
    base = pipe.generate(cond, [1, 2])
    pruned_ctrl = WidthRatios({6: 0.5}, pipe.patch_nums)
    state = pipe.start(cond, [1, 2])
    while not pipe.done(state):
        pipe.step(state, pruned_ctrl.ratio(state.scale_index, 5))
    # layers 0..depth prune by default for a 2-layer model: width 6 keeps 36 - 18 tokens per layer
    assert pipe.layer_range == (0, 2)
    assert [kv.length for kv in state.kvs] == [1 + 4 + 9 + 16 + 18] * 2
    pruned = pipe.finish(state)
    assert not torch.equal(pruned.images_B3HW, base.images_B3HW)
    # an empty layer range prunes nothing: same images as unpruned
    pipe_no_layers = VarPipeline(pipe.config, pipe.vqvae, pipe.var, layer_range=(1, 1))
    same = pipe_no_layers.generate(cond, [1, 2], pruned_ctrl)
    assert torch.equal(same.images_B3HW, base.images_B3HW)
    # pruning only layer 1: layer 0 keeps its full cache
    pipe_l1 = VarPipeline(pipe.config, pipe.vqvae, pipe.var, layer_range=(1, 2))
    st = pipe_l1.start(cond, [1, 2])
    while not pipe_l1.done(st):
        pipe_l1.step(st, pruned_ctrl.ratio(st.scale_index, 5))
    assert [kv.length for kv in st.kvs] == [66, 48]


def test_pivotal_tokens_are_the_ones_far_from_the_mean():
    x = torch.zeros(1, 9, 4)
    x[0, 2] = 5.0
    x[0, 7] = -3.0
    keep = pivotal_indices(x, ratio=0.78)  # 9 - int(7.02) = 2 tokens kept
    assert keep.tolist() == [[2, 7]]
    earlier = torch.arange(4.0).view(1, 1, 2, 2).expand(1, 4, 2, 2)  # (B, C, 2, 2)
    y = torch.full((1, 2, 4), 100.0)
    full = restore_tokens(earlier, y, torch.tensor([[0, 8]]), pn=3)
    assert full.shape == (1, 9, 4)
    assert torch.equal(full[0, 0], y[0, 0]) and torch.equal(full[0, 8], y[0, 1])
    # restored positions come from the earlier 2x2 map, area-interpolated to 3x3 (centre = mean)
    assert full[0, 4, 0].item() == pytest.approx(1.5)


def test_tokenizer_encode_matches_training_fhat():
    cfg = tiny_config()
    vqvae, _ = build_models(cfg)
    img = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        f = vqvae.quant_conv(vqvae.encoder(img))
        f_hat_train, _ = vqvae.quantize(f)
        idx = vqvae.quantize.encode(f)
        hw = cfg.var.patch_nums[-1]
        f_hat = sum(vqvae.quantize.upsampled_codes(i, si, hw) for si, i in enumerate(idx))
    assert [i.shape[1] for i in idx] == [pn * pn for pn in cfg.var.patch_nums]
    torch.testing.assert_close(f_hat, f_hat_train, atol=1e-5, rtol=1e-4)
    # the first scale is the area-mean of the latent, quantised to the nearest code
    mean_C = f.mean(dim=(2, 3))
    d = torch.cdist(mean_C, vqvae.quantize.embedding.weight)
    assert idx[0][:, 0].tolist() == d.argmin(dim=1).tolist()


def test_dead_codes_are_reseeded_with_residuals_the_tokenizer_saw():
    cfg = tiny_config()
    vqvae, _ = build_models(cfg)
    q = vqvae.quantize
    img = torch.rand(4, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with pytest.raises(RuntimeError, match="training pass"):
        q.restart_dead_codes(0.5)
    with torch.no_grad():
        q.train()(vqvae.quant_conv(vqvae.encoder(img)))
    rows = q.recent_residuals
    assert rows.shape == (4 * sum(pn * pn for pn in cfg.var.patch_nums), cfg.vqvae.z_channels)
    # usage is counted per scale: one hit per token of that scale, scaled by the moving average's 0.1
    torch.testing.assert_close(q.ema_vocab_hit_SV.sum(1), 0.1 * 4 * torch.tensor([pn * pn for pn in cfg.var.patch_nums]).float())
    live = q.ema_vocab_hit_SV.sum(0) >= 0.5
    before = q.embedding.weight.detach().clone()
    n = q.restart_dead_codes(0.5, torch.Generator().manual_seed(0))
    after = q.embedding.weight.detach()
    assert n == int((~live).sum()) > 0
    torch.testing.assert_close(after[live], before[live])  # codes in use are kept
    # every re-seeded code is now exactly one of the residual vectors the pass quantised
    assert all((rows == code).all(1).any() for code in after[~live])
    assert q.restart_dead_codes(0.5) == 0  # a grace period: nothing is re-seeded twice in a row


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[[False, False, True, True]]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[[False, False, True, True]]]
    assert not torch.isinf(filter_logits(logits, top_k=0, top_p=0.0)).any()


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (5, 0.0), (0, 0.8), (7, 0.6), (40, 0.95)])
def test_fast_sampling_keeps_the_filtered_distribution(top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 50) * 2
    reference = filter_logits(logits, top_k, top_p).softmax(-1)
    probs, ids = candidates(logits, top_k, top_p)
    dense = probs if ids is None else torch.zeros_like(reference).scatter(-1, ids, probs)
    torch.testing.assert_close(dense, reference, atol=1e-6, rtol=1e-5)
    idx = sample_tokens(logits, make_generators([1, 2]), top_k, top_p)
    assert (reference.gather(-1, idx.unsqueeze(-1)) > 0).all()


def test_controllers_and_width_strings():
    tail = TailPattern()
    assert [tail.ratio(i, 10, None) for i in range(10)] == [0, 0, 0, 0, 0.3, 0.4, 1.0, 1.0, 0.8, 1.0]
    assert parse_width_ratios("8:0.5, 16:1.0", (1, 2, 8, 16)) == {8: 0.5, 16: 1.0}
    ctrl = make_controller("8:0.5,16:1", (1, 2, 8, 16))
    assert [ctrl.ratio(i, 4, None) for i in range(4)] == [0, 0, 0.5, 1.0]
    assert isinstance(make_controller("none", (1,)), NoPruning)
    assert isinstance(make_controller("default", (1,)), TailPattern)
    for bad, msg in (("7:0.5", "width 7 is not a scale"), ("8-0.5", "not width:ratio"), ("8:-1", "ratio >= 0"),
                     ("8:0.1,8:0.2", "listed twice")):
        with pytest.raises(UserError, match=msg):
            parse_width_ratios(bad, (1, 2, 8, 16))


@pytest.mark.parametrize("ratios, layer_range", [([0, 0.5, 0, 0.7, 1.0], (0, 2)), ([0.3, 0, 1.0, 0.5, 0.5], (1, 2)),
                                                  ([0, 0, 0, 0, 0], (0, 2))])
def test_flops_accounting_matches_what_generation_computes(pipe, ratios, layer_range):
    p = VarPipeline(pipe.config, pipe.vqvae, pipe.var, layer_range=layer_range)
    state = p.start(p.conditions(classes=[1]), [0])
    for r in ratios:
        p.step(state, r)
    tokens = computed_tokens(p.patch_nums, p.config.var.depth, ratios, layer_range)
    assert [kv.length for kv in state.kvs] == [sum(row[li] for row in tokens) for li in range(p.config.var.depth)]


def test_flops_follow_pruning_and_skips():
    cfg = preset("benchmark")
    n = len(cfg.var.patch_nums)
    full = transformer_flops(cfg.var, 4096, 32, [0.0] * n)
    tail = transformer_flops(cfg.var, 4096, 32, [TailPattern().ratio(i, n) for i in range(n)])
    assert tail[-1] == 0 and tail[-3] == 0 and tail[:4] == full[:4]
    assert 0 < tail[-2] < full[-2]
    assert full[-1] / sum(full) > 0.3  # the last scale dominates, as in VAR/Infinity


def test_text_conditional_option_generates_from_prompts():
    p = tiny(cond="text", text_dim=16)
    cond = p.conditions(prompts=["a red fox", "a red fox", "blue sky"])
    imgs = p.generate(cond, [0, 0, 0]).images_B3HW
    assert torch.equal(imgs[0], imgs[1])
    assert not torch.equal(imgs[0], imgs[2])


def test_class_model_maps_prompts_to_classes(pipe):
    assert pipe.conditions(prompts=["a handwritten seven", "digit 3"]).tolist() == [7, 3]
    with pytest.raises(UserError, match="exactly one class name"):
        pipe.conditions(prompts=["a cat"])


def test_config_round_trip():
    for name in ("demo-var", "demo-var-digits"):
        cfg = preset(name)
        assert VarModelConfig.from_dict(cfg.to_dict()) == cfg
    assert preset("demo-var-digits").image_size == 16 and preset("demo-var").image_size == 32 and math.isclose(preset("var-d16").image_size, 256)
    with pytest.raises(UserError):
        VarModelConfig.from_dict({"var": {"depht": 3}})


def test_random_preset_loads_by_name():
    p = load_var_model("random:tiny")
    assert p.generate(p.conditions(classes=[0]), [0]).images_B3HW.shape == (1, 3, 8, 8)
    with pytest.raises(UserError, match="unknown preset"):
        load_var_model("random:nope")


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (5, 0.0), (0, 0.8), (7, 0.6), (40, 0.95), (50, 0.9)])
def test_sampling_draws_as_foundation_vision_does(top_k, top_p):
    """Their sampler: -inf outside top-k / top-p, softmax over the vocabulary, one multinomial draw
    per row, all rows of the batch from one generator. Ours consumes the same random numbers."""
    torch.manual_seed(3)
    logits = torch.randn(3, 6, 50) * 2
    logits[0, 0, :8] = 4.0  # a tie at the k-th value keeps more than k tokens, as theirs does
    B, l, V = logits.shape
    dense = filter_logits(logits, top_k, top_p).softmax(-1)
    shared = torch.multinomial(dense.view(-1, V), 1, generator=torch.Generator().manual_seed(9)).view(B, l)
    assert torch.equal(sample_tokens(logits, make_generators([9]), top_k, top_p), shared)
    per_item = torch.stack([torch.multinomial(dense[b], 1, generator=torch.Generator().manual_seed(s))[:, 0]
                            for b, s in enumerate((4, 5, 6))])
    assert torch.equal(sample_tokens(logits, make_generators([4, 5, 6]), top_k, top_p), per_item)


def test_int_seed_draws_the_batch_from_one_generator(pipe):
    cond = pipe.conditions(classes=[2, 4])
    shared = pipe.generate(cond, 7).images_B3HW
    assert torch.equal(pipe.generate(cond, 7).images_B3HW, shared)
    # the items share one random stream (so they depend on each other), unlike per-item seeds
    assert not torch.allclose(pipe.generate(cond, [7, 7]).images_B3HW[1], shared[1])
    with pytest.raises(ValueError, match="3 seeds for 2 conditions"):
        pipe.start(cond, [1, 2, 3])


def test_phi_ticks_follow_foundation_vision():
    from ecad_ray.var.vqvae import PhiPartiallyShared, phi_ticks

    assert phi_ticks(4).tolist() == pytest.approx([1 / 12, 13 / 36, 23 / 36, 11 / 12])
    assert phi_ticks(3).tolist() == pytest.approx([1 / 6, 1 / 2, 5 / 6])  # 1/(2K) margins when K != 4
    phis = PhiPartiallyShared([torch.nn.Identity() for _ in range(3)])
    picks = [next(i for i, m in enumerate(phis.qresi_ls) if m is phis.for_scale(si, 10)) for si in range(10)]
    assert picks == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # 3/9 and 6/9 are ties: the first tick wins


def test_state_dict_has_foundation_vision_names_and_buffers(pipe):
    sd = pipe.var.state_dict()
    assert "lvl_embed.weight" in sd and "lvl_emb.weight" not in sd
    assert torch.equal(sd["lvl_1L"], torch.tensor([[0] + [1] * 4 + [2] * 9 + [3] * 16 + [4] * 36]))
    bias = sd["attn_bias_for_masking"]
    assert bias.shape == (1, 1, 66, 66) and bias[0, 0, 4, 5].item() == -math.inf and bias[0, 0, 5, 4].item() == 0
    assert all(torch.equal(sd[f"blocks.{i}.attn.zero_k_bias"], torch.zeros(32)) for i in range(2))
    assert pipe.vqvae.state_dict()["quantize.ema_vocab_hit_SV"].shape == (5, 32)
