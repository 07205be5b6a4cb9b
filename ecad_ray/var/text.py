"""Prompts as conditions: a weight-free prompt embedding for text-conditional VAR models,
and prompt -> class for class-conditional ones that name their classes.

The hashed bag-of-words embedding needs no download, so a text-conditional model can be
built, trained and tested anywhere; it is the placeholder a real text encoder replaces.
"""

from __future__ import annotations

import hashlib
import re

import torch

from ecad_ray.errors import UserError

_WORD = re.compile(r"[a-z0-9]+")


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
