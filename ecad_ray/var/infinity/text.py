"""Prompts as Infinity conditions: every token's text-encoder state, not a pooled vector.

Infinity cross-attends to Flan-T5's last hidden states of the prompt's real tokens (padding
dropped, at most 512), as their `encode_prompt` does. The encoder comes from the VAR family's
loader (`ecad_ray.var.text`: a hub id or folder, offline only what is cached, a one-line error
naming the encoder and how to download it otherwise). `hash` is a weight-free stand-in for
tests and the tiny preset: one hashed unit vector per word.
"""

from __future__ import annotations

import torch

from ecad_ray.errors import UserError
from ecad_ray.var.infinity.transformer import TextStates
from ecad_ray.var.text import HASH, _load, hash_text_embedding, words

MAX_TOKENS = 512  # their tokenizer's max_length


def hash_states(prompt: str, width: int, max_tokens: int) -> torch.Tensor:
    """(T, width): one row per word (at least one row), at most `max_tokens`."""
    ws = words(prompt)[:max_tokens] or [""]
    return torch.stack([hash_text_embedding(w, width) * width ** 0.5 for w in ws])


@torch.inference_mode()
def encode_prompts(encoder: str, width: int, prompts: list[str], device: torch.device | str = "cpu",
                   max_tokens: int = MAX_TOKENS) -> TextStates:
    """Text states of each prompt's real tokens, `width` wide (the model's `text_channels`)."""
    if encoder == HASH:
        return TextStates.from_list([hash_states(p, width, max_tokens).to(device) for p in prompts])
    enc = _load(encoder, width, "mean", max_tokens)
    if enc.width != width:
        raise UserError(f"text encoder {encoder!r} gives {enc.width}-wide states but the model's text_channels "
                        f"is {width}; Infinity-2B uses google/flan-t5-xl (2048)")
    tokens = enc.tokenizer(prompts, max_length=max_tokens, padding="max_length", truncation=True, return_tensors="pt")
    model = enc.model.to(device)
    hidden = model(input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)).last_hidden_state
    lens = tokens.attention_mask.sum(dim=-1).tolist()
    return TextStates.from_list([h[:n].float() for h, n in zip(hidden, lens)])
