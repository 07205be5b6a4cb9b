"""Token sampling with top-k / top-p filtering and one random generator per item.

Each item draws from its own `torch.Generator` seeded with its seed, so an image depends on
its seed and condition, not on which other items share its batch.
"""

from __future__ import annotations

import torch


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


def candidates(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tokens `filter_logits` keeps, as (probabilities (B, l, k), vocabulary ids or None = all).

    Works on the top-k slice only (a partial selection instead of sorting the whole
    vocabulary), which matters at large vocabularies: sampling would otherwise cost a sizable
    share of a pruned scale's time.
    """
    V = logits_BlV.shape[-1]
    use_p = 0.0 < top_p < 1.0
    if 0 < top_k < V:
        vals, ids = logits_BlV.topk(top_k, dim=-1)  # sorted, most likely first
    elif use_p:
        vals, ids = logits_BlV.sort(dim=-1, descending=True)
    else:
        return logits_BlV.softmax(dim=-1), None
    probs = vals.softmax(dim=-1)
    if use_p:
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        probs = probs.masked_fill(mass_before >= top_p, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs, ids


def sample_tokens(logits_BlV: torch.Tensor, generators: list[torch.Generator], top_k: int = 0,
                  top_p: float = 0.0) -> torch.Tensor:
    """One token per position (B, l), item b drawn with `generators[b]`."""
    probs, ids = candidates(logits_BlV.float(), top_k, top_p)
    picks_Bl = torch.stack([
        torch.multinomial(probs[b], num_samples=1, generator=g)[:, 0] for b, g in enumerate(generators)
    ])
    return picks_Bl if ids is None else ids.gather(-1, picks_Bl.unsqueeze(-1)).squeeze(-1)


def make_generators(seeds: list[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per item."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
