"""Prompts as conditions for VAR models.

A text-conditional VAR is conditioned on one vector per prompt made from a text encoder's
last hidden states (`PromptEncoder`): their masked mean (`mean`), or the first `text_tokens`
states side by side with padding zeroed (`tokens`). The mean loses which word goes with
which: on the shapes captions a linear probe reads each object's colour back from the demo
encoder's mean 59% of the time, from `tokens` 100%, so the demo VAR uses `tokens`. The encoder is named in the model's config
(`VARConfig.text_encoder`) and never trained with the VAR, so the same prompt always gives
the same vector and the encoder can be shared with other models:
- `demo`: the demo DiT's T5 encoder (trained with it on the shapes captions; shipped);
- a hub id or a local folder: any transformers text encoder (T5, CLIP text, BERT-style);
- `hash`: a weight-free hashed bag of words, for tests and configs that need no encoder.
Class-conditional models that name their classes map a prompt to its class instead
(`prompt_to_class`).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import torch

from ecad_ray.errors import UserError

_WORD = re.compile(r"[a-z0-9]+")
HASH = "hash"
DEMO = "demo"
POOLINGS = ("mean", "tokens")


def words(prompt: str) -> list[str]:
    """Lower-case alphanumeric words."""
    return _WORD.findall(prompt.lower())


def hash_text_embedding(prompt: str, dim: int) -> torch.Tensor:
    """Unit vector (dim,): each word adds ±1 at a hashed position (stable across runs)."""
    v = torch.zeros(dim)
    for w in words(prompt):
        h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        v[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    n = v.norm()
    return v / n if n > 0 else v


class PromptEncoder:
    """prompts -> (B, dim) float32 vectors; frozen, deterministic, batch-independent."""

    def __init__(self, name: str, width: int, tokenizer=None, model=None, max_length: int = 77,
                 pooling: str = "mean"):
        if pooling not in POOLINGS:
            raise UserError(f"text pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.name, self.width, self.pooling = name, width, pooling
        self.tokenizer, self.model, self.max_length = tokenizer, model, max_length

    @property
    def dim(self) -> int:
        """Width of one prompt's vector."""
        return self.width * self.max_length if self.pooling == "tokens" and self.model is not None else self.width

    @torch.inference_mode()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        if self.model is None:
            return torch.stack([hash_text_embedding(p, self.dim) for p in prompts])
        tokens = self.tokenizer([p.lower().strip() for p in prompts], padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        mask_BL = tokens.attention_mask
        hidden_BLD = self.model(input_ids=tokens.input_ids, attention_mask=mask_BL).last_hidden_state
        m = mask_BL.unsqueeze(-1).to(hidden_BLD.dtype)
        if self.pooling == "tokens":
            return (hidden_BLD * m).flatten(1).float()
        return ((hidden_BLD * m).sum(1) / m.sum(1).clamp(min=1)).float()


def load_prompt_encoder(name: str, dim: int, pooling: str = "mean", max_length: int = 16) -> PromptEncoder:
    """The encoder a config names; its vectors must be `dim` wide (the VAR's `text_dim`)."""
    encoder = _load(name, dim, pooling, max_length)
    if encoder.dim != dim:
        raise UserError(f"text encoder {name!r} gives {encoder.dim}-wide vectors but the model's "
                        f"text_dim is {dim}; train the model with this encoder or pick the one it was trained with")
    return encoder


@lru_cache(maxsize=4)
def _load(name: str, dim: int, pooling: str, max_length: int) -> PromptEncoder:
    if name == HASH:
        return PromptEncoder(HASH, dim)
    if name == DEMO:
        from ecad_ray.models import demo

        parts = demo.build_components()
        width = demo.demo_config()["text_encoder"]["d_model"]
        return PromptEncoder(DEMO, width, parts["tokenizer"], parts["text_encoder"], max_length, pooling)
    return _transformers_encoder(name, pooling, max_length)


def _transformers_encoder(name: str, pooling: str, max_length: int) -> PromptEncoder:
    """Tokenizer + text encoder from a hub id or folder (offline: only what is already cached)."""
    import transformers

    local = Path(name).is_dir()
    try:
        config = transformers.AutoConfig.from_pretrained(name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
        if config.model_type in ("t5", "mt5", "umt5"):
            model = transformers.T5EncoderModel.from_pretrained(name)
        elif config.model_type.startswith("clip"):
            model = transformers.CLIPTextModel.from_pretrained(name)
        else:
            model = transformers.AutoModel.from_pretrained(name)
    except (OSError, ValueError) as err:
        where = "folder" if local else "hub id"
        raise UserError(f"text encoder {name!r}: cannot load this {where} ({str(err).splitlines()[0]}); give a folder "
                        f"with config.json, tokenizer and weights, or download it first with "
                        f"`huggingface-cli download {name}`") from err
    model.eval()
    width = getattr(model.config, "d_model", None) or getattr(model.config, "hidden_size")
    return PromptEncoder(name, int(width), tokenizer, model, max_length, pooling)


def prompt_to_class(prompt: str, class_names: tuple[str, ...], where: str = "prompt") -> int:
    """The one class a prompt names (by class name or index), for class-conditional models."""
    ws = set(words(prompt))
    hits = {i for i, name in enumerate(class_names) if set(words(name)) <= ws and words(name)}
    hits |= {int(w) for w in ws if w.isdigit() and int(w) < max(len(class_names), 1)}
    if len(hits) != 1:
        names = ", ".join(class_names) if class_names else "none (use --classes)"
        found = "none" if not hits else ", ".join(class_names[i] if i < len(class_names) else str(i) for i in sorted(hits))
        raise UserError(f"{where} {prompt!r}: a class-conditional model needs exactly one class name "
                        f"in the prompt (found {found}; names: {names})")
    return hits.pop()
