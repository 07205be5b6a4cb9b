"""Token sampling with top-k / top-p filtering, drawn the way FoundationVision's VAR draws.

The maths and the random stream are those of VAR's `sample_with_top_k_top_p_`: logits below
the k-th largest are dropped; then, in ascending order, tokens whose cumulative probability
(themselves and every less likely token) is at most 1 - top_p are dropped, the most likely
one always kept; the survivors' softmax over the whole vocabulary goes to `torch.multinomial`
(one sample per row). A generator therefore yields the same tokens here as in their code.

Each item draws from its own `torch.Generator` seeded with its seed, so an image depends on
its seed and condition, not on which other items share its batch. One generator for a whole
batch draws the batch's rows in one call, item after item: FoundationVision's `g_seed`.

The filtering works on the top-k slice (a partial selection instead of sorting the whole
vocabulary, which matters at vocabulary 4096); only the final softmax and the draw, which
need every vocabulary entry to consume the same random numbers, are dense.
"""

from __future__ import annotations

import torch

from ecad_ray.errors import UserError


def filter_logits(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p mass to -inf (0 turns a filter off)."""
    V = logits_BlV.shape[-1]
    logits_BlV = logits_BlV.clone()
    if 0 < top_k < V:
        kth_Bl1 = logits_BlV.topk(top_k, dim=-1).values[..., -1:]
        logits_BlV.masked_fill_(logits_BlV < kth_Bl1, -torch.inf)
    if 0.0 < top_p < 1.0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1, descending=False)
        drop_sorted = sorted_BlV.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop_sorted[..., -1:] = False  # always keep the most likely token
        logits_BlV.masked_fill_(drop_sorted.scatter(-1, order_BlV, drop_sorted), -torch.inf)
    return logits_BlV


def _kept_slice(logits_BlV: torch.Tensor, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(logits, vocabulary ids) of the tokens `filter_logits` keeps, most likely first, with -inf
    for the ones top-p drops; None when no filter applies or a tie at the k-th value keeps more
    than k tokens (then the caller filters densely)."""
    V = logits_BlV.shape[-1]
    use_p = 0.0 < top_p < 1.0
    if 0 < top_k < V:
        vals, ids = logits_BlV.topk(top_k + 1, dim=-1)  # sorted, most likely first; one more to see ties
        if bool((vals[..., top_k - 1] == vals[..., top_k]).any()):
            return None
        vals, ids = vals[..., :top_k], ids[..., :top_k]
    elif use_p:
        vals, ids = logits_BlV.sort(dim=-1, descending=True)
    else:
        return None
    if use_p:
        probs = vals.softmax(dim=-1)
        mass_up_to = probs.flip(-1).cumsum(dim=-1).flip(-1)  # this token and every less likely one
        drop = mass_up_to <= (1 - top_p)
        drop[..., 0] = False  # always keep the most likely token
        vals = vals.masked_fill(drop, -torch.inf)
    return vals, ids


def candidates(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens `filter_logits` keeps, as (probabilities (B, l, k), vocabulary ids or None = all)."""
    kept = _kept_slice(logits_BlV, top_k, top_p)
    if kept is None:
        return filter_logits(logits_BlV, top_k, top_p).softmax(dim=-1), None
    vals, ids = kept
    return vals.softmax(dim=-1), ids


def token_probs(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Sampling distribution over the whole vocabulary (B, l, V), as VAR's sampler computes it:
    the softmax of the logits with every filtered-out entry set to -inf."""
    kept = _kept_slice(logits_BlV, top_k, top_p)
    if kept is None:
        return filter_logits(logits_BlV, top_k, top_p).softmax(dim=-1)
    vals, ids = kept
    return torch.full_like(logits_BlV, -torch.inf).scatter_(-1, ids, vals).softmax(dim=-1)


def sample_tokens(logits_BlV: torch.Tensor, generators: list[torch.Generator], top_k: int = 0,
                  top_p: float = 0.0) -> torch.Tensor:
    """One token per position (B, l). With B generators item b draws with `generators[b]`; with
    one generator for B > 1 items the batch draws in one call (FoundationVision's shared seed)."""
    logits_BlV = logits_BlV.float()
    if not bool(torch.isfinite(logits_BlV).all()):
        raise UserError("VAR sampling: the transformer produced NaN/inf logits; the weights (or the "
                        "tokenizer's Phi convs feeding the next scale) hold non-finite or uninitialised values")
    B, l, V = logits_BlV.shape
    probs_BlV = token_probs(logits_BlV, top_k, top_p)
    if len(generators) == 1 and B > 1:
        return _draw(probs_BlV.reshape(B * l, V), generators[0]).view(B, l)
    if len(generators) != B:
        raise ValueError(f"{len(generators)} generators for {B} items (give one per item, or one for the batch)")
    return torch.stack([_draw(probs_BlV[b], g) for b, g in enumerate(generators)])


def _draw(probs_NV: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One multinomial draw per row with `generator`, on the generator's device."""
    picks = torch.multinomial(probs_NV.to(generator.device), num_samples=1, replacement=True, generator=generator)
    return picks[:, 0].to(probs_NV.device)


def make_generators(seeds: list[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per item."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
