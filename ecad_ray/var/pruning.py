"""FastVAR-style token pruning: pivotal token selection and cached-token restoration.

At a pruned scale each layer in the layer range keeps the `L - int(L * ratio)` tokens that
lie farthest (squared distance) from the token map's mean: a cheap proxy for
high-frequency content, which is what later scales add. The pruned positions take the same
layer's output from the last scale it computed in full, area-interpolated to the current
map size. A ratio >= 1 skips the scale altogether (no tokens are predicted there).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def pivotal_indices(x_BlC: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices (B, K) of the tokens to keep, K = l - int(l * ratio), in ascending order."""
    B, l, C = x_BlC.shape
    keep = l - int(l * ratio)
    score_Bl = (x_BlC - x_BlC.mean(dim=1, keepdim=True)).pow(2).sum(dim=-1)
    return score_Bl.topk(keep, dim=1, sorted=False).indices.sort(dim=1).values


def restore_tokens(earlier_BChw: torch.Tensor, y_BKC: torch.Tensor, keep_idx_BK: torch.Tensor, pn: int) -> torch.Tensor:
    """Full (B, pn², C) map: computed tokens at `keep_idx_BK`, the earlier output elsewhere."""
    B, C = earlier_BChw.shape[:2]
    base_BlC = F.interpolate(earlier_BChw, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)
    return base_BlC.scatter(1, keep_idx_BK.unsqueeze(-1).expand(-1, -1, C), y_BKC)


def run_layers(x_BlC: torch.Tensor, depth: int, pruning,
               layer: Callable[[int, torch.Tensor, torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
    """Run `depth` layers on one scale's tokens, pruning inside `pruning`'s layer range.

    `layer(li, x, keep_idx_BK)` runs layer `li` on `x` (all tokens when `keep_idx_BK` is None,
    else the kept ones at those positions). Without `pruning` (a `ScalePruning`) every layer sees
    all tokens. With it, layers in [layer_start, layer_end) remember their output whenever they
    see all tokens, and at a pruned scale compute only the pivotal tokens; the other positions
    are restored from that remembered output, area-interpolated to this size. A layer with
    nothing remembered yet computes every token. Shared by VAR and Infinity.
    """
    B, l, C = x_BlC.shape
    pn = math.isqrt(l)
    for li in range(depth):
        in_range = pruning is not None and pruning.layer_start <= li < pruning.layer_end
        if in_range and int(l * pruning.ratio) > 0 and li in pruning.restore_BChw:
            keep_idx_BK = pivotal_indices(x_BlC, pruning.ratio)
            x_BKC = torch.gather(x_BlC, 1, keep_idx_BK.unsqueeze(-1).expand(-1, -1, C))
            x_BlC = restore_tokens(pruning.restore_BChw[li], layer(li, x_BKC, keep_idx_BK), keep_idx_BK, pn)
        else:
            x_BlC = layer(li, x_BlC, None)
            if in_range:
                pruning.restore_BChw[li] = x_BlC.transpose(1, 2).reshape(B, C, pn, pn)
    return x_BlC


def default_layer_range(depth: int) -> tuple[int, int]:
    """FastVAR prunes layers 3..end of a 32-layer model; keep the same share of early layers."""
    return (depth * 3) // 32, depth


def computed_tokens(patch_nums: tuple[int, ...], depth: int, ratios: list[float],
                    layer_range: tuple[int, int]) -> list[list[int]]:
    """Tokens each layer computes at each scale ([scale][layer]), mirroring `VAR.run_blocks`.

    A layer in the range prunes once it has a full output to restore from; a skipped scale
    computes nothing. The sum over scales is each layer's KV-cache length at the end.
    """
    start, end = layer_range
    ever_full = [False] * depth
    out = []
    for pn, r in zip(patch_nums, ratios):
        l = pn * pn
        if r >= 1:
            out.append([0] * depth)
            continue
        row = []
        for li in range(depth):
            in_range = start <= li < end
            if in_range and int(l * r) > 0 and ever_full[li]:
                row.append(l - int(l * r))
            else:
                row.append(l)
                ever_full[li] = ever_full[li] or in_range
        out.append(row)
    return out


def transformer_flops(var_cfg, vocab_size: int, cvae: int, ratios: list[float],
                      layer_range: tuple[int, int] | None = None, cfg_rows: int = 2) -> list[float]:
    """Multiply-add FLOPs (2 per MAC) per scale for one image, following what a generation step does.

    Counts qkv/proj/FFN/attention per layer on the tokens it computes, against the keys it
    sees, and the vocabulary head on all of the scale's tokens, for each of CFG's `cfg_rows`
    rows (conditional and null); the word embedding of the summed codes runs once per image,
    before the rows are doubled, and not at scale 0 (whose input is the condition itself).
    The adaLN modulations are computed once per batch, before the first scale, and are not a
    scale's cost. A skipped scale (ratio >= 1) costs 0. `tests/var/test_var_flops.py` checks
    these figures against the multiply-accumulates counted on the operators during a step.
    """
    C, depth = var_cfg.embed_dim, var_cfg.depth
    hidden = round(C * var_cfg.mlp_ratio)
    tokens = computed_tokens(var_cfg.patch_nums, depth, ratios, layer_range or default_layer_range(depth))
    kv_len = [0] * depth
    out = []
    for si, (pn, row) in enumerate(zip(var_cfg.patch_nums, tokens)):
        if not any(row):
            out.append(0.0)
            continue
        l = pn * pn
        per_row = l * C * vocab_size  # head
        for li, n in enumerate(row):
            kv_len[li] += n
            per_row += n * (4 * C * C + 2 * C * hidden) + 2 * n * kv_len[li] * C
        word_embed = l * cvae * C if si > 0 else 0
        out.append(2.0 * (per_row * cfg_rows + word_embed))
    return out
