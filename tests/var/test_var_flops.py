"""The analytic per-scale FLOPs (`transformer_flops`) equal the multiply-accumulates the
transformer really performs during a step, counted on the operators as they run.

The count is taken with a `TorchDispatchMode`, which sees every `aten.linear` (the
`nn.Linear` layers and the attention's `F.linear` on `mat_qkv`) and every
`scaled_dot_product_attention`, with their real shapes. torch's `FlopCounterMode` is not used:
on the CPU it misses most of the fused attention kernel's work. Convolutions are the
tokenizer's Phi (not the transformer) and are left out; any other matrix product would make
the count incomplete, so it fails the test instead of being ignored.
"""

import pytest

import ecad_ray  # noqa: F401
from ecad_ray.var.checkpoints import build_models
from ecad_ray.var.config import preset
from ecad_ray.var.generation import VarPipeline
from ecad_ray.var.pruning import computed_tokens, transformer_flops
from mac_counter import MacCounter

@pytest.fixture(scope="module")
def tiny_pipe() -> VarPipeline:
    cfg = preset("tiny", patch_nums=(1, 2, 3, 4, 6), depth=3)
    vqvae, var = build_models(cfg, seed=0)
    return VarPipeline(cfg, vqvae, var)


def _counted_per_scale(pipe: VarPipeline, ratios: list[float], batch: int) -> list[float]:
    """FLOPs per image (2 per MAC) counted at each scale of one generation."""
    labels = list(range(batch))
    state = pipe.start(pipe.conditions(classes=labels), list(range(batch)))
    out = []
    for ratio in ratios:
        with MacCounter() as counter:
            pipe.step(state, ratio)
        out.append(2.0 * counter.macs / batch)
    return out


@pytest.mark.parametrize("ratios, layer_range", [
    ([0, 0, 0, 0, 0], (1, 3)),          # unpruned
    ([0, 0.5, 0, 0.7, 0.25], (1, 3)),   # pruned scales, pruning from layer 1 on
    ([0, 0.5, 1.0, 0.5, 1.0], (0, 2)),  # pruned and skipped scales, a range ending before the last layer
    ([0.6, 0.5, 0, 1.0, 0.5], (0, 3)),  # pruning asked where nothing is remembered yet (scale 0)
])
def test_analytic_flops_equal_counted_flops_per_scale(tiny_pipe, ratios, layer_range):
    pipe = VarPipeline(tiny_pipe.config, tiny_pipe.vqvae, tiny_pipe.var, layer_range=layer_range)
    vq = pipe.config.vqvae
    analytic = transformer_flops(pipe.config.var, vq.vocab_size, vq.z_channels, ratios, layer_range)
    counted = _counted_per_scale(pipe, ratios, batch=2)
    assert counted == analytic
    tokens = computed_tokens(pipe.patch_nums, pipe.config.var.depth, ratios, layer_range)
    for r, c in zip(ratios, counted):
        assert (c == 0) == (r >= 1)  # a skipped scale costs nothing, every other scale something
    full = transformer_flops(pipe.config.var, vq.vocab_size, vq.z_channels, [0.0] * len(ratios), layer_range)
    pruned = [i for i, row in enumerate(tokens) if 0 < ratios[i] < 1 and min(row) < pipe.patch_nums[i] ** 2]
    assert all(counted[i] < full[i] for i in pruned)


def test_text_conditional_model_counts_the_same_way():
    cfg = preset("tiny", cond="text", text_dim=16, patch_nums=(1, 2, 3, 4))
    vqvae, var = build_models(cfg, seed=0)
    pipe = VarPipeline(cfg, vqvae, var, layer_range=(0, 2))
    ratios = [0, 0.5, 1.0, 0.5]
    state = pipe.start(pipe.conditions(prompts=["a red circle", "a blue square"]), [0, 1])
    counted = []
    for ratio in ratios:
        with MacCounter() as counter:
            pipe.step(state, ratio)
        counted.append(2.0 * counter.macs / 2)
    vq = cfg.vqvae
    assert counted == transformer_flops(cfg.var, vq.vocab_size, vq.z_channels, ratios, (0, 2))
