"""Infinity's transformer FLOPs per scale, following what a generation step computes.

Per CFG row and layer, on the n tokens the layer computes against the kv keys it has seen:
self-attention projections 4C² n and products 2 n kv C, cross-attention projections (query and
output) 2C² n and products 2 n T C against the T text tokens, the FFN 2 C hidden n. Per row and
scale: the head's adaLN on the condition (2C²) and the bitwise head on all tokens (2d C each).
Per image and scale > 0: the word embedding of the summed codes (d C per token), before the rows
are doubled. Everything done once per batch (the text projections, the pooled condition, the
cross-attention keys and values, the shared adaLN) is not a scale's cost. A skipped scale costs
0. 2 FLOPs per multiply-accumulate. `tests/var/test_infinity.py` checks these figures against
the multiply-accumulates counted on the operators during a step.
"""

from __future__ import annotations

from ecad_ray.var.pruning import computed_tokens, default_layer_range

NOMINAL_TEXT_TOKENS = 32  # text length used for FLOPs figures when no prompt is given


def infinity_flops(config, ratios: list[float], layer_range: tuple[int, int] | None = None,
                   text_len: int = NOMINAL_TEXT_TOKENS, cfg_rows: int = 2) -> list[float]:
    """FLOPs per scale for one image of an `InfinityModelConfig` at these ratios."""
    t = config.transformer
    C, depth, d, hidden = t.embed_dim, t.depth, config.vae.codebook_dim, t.ffn_hidden
    tokens = computed_tokens(t.scales, depth, ratios, layer_range or default_layer_range(depth))
    kv_len = [0] * depth
    out = []
    for si, (w, row) in enumerate(zip(t.scales, tokens)):
        if not any(row):
            out.append(0.0)
            continue
        l = w * w
        per_row = 2 * C * C + l * C * 2 * d
        for li, n in enumerate(row):
            kv_len[li] += n
            per_row += n * (6 * C * C + 2 * C * hidden) + 2 * n * kv_len[li] * C + 2 * n * text_len * C
        word_embed = l * d * C if si > 0 else 0
        out.append(2.0 * (per_row * cfg_rows + word_embed))
    return out
