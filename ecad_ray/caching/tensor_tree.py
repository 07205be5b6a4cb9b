"""Map over the tensors of a module's output, whatever its shape (tensor, tuple, list, `.sample`).

A PixArt sub-layer returns a tensor, a FLUX attention a tuple of two, a transformer an output
object or a tuple; the hooks cache, cast, slice and measure all of them the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import torch


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    """`value` with `fn` applied to every tensor in it (tuples and lists kept, others as they are)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(tree_map(fn, v) for v in value)
    if isinstance(value, list):
        return [tree_map(fn, v) for v in value]
    return value


def tree_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in `value`, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tree_tensors(v)]
    return []


def nbytes(value: Any) -> int:
    """Bytes held by the tensors in `value` (what the cache counts)."""
    return sum(t.numel() * t.element_size() for t in tree_tensors(value))


def map_output(fn: Callable[[torch.Tensor], torch.Tensor], out: Any) -> Any:
    """`fn` applied to a transformer's output: a tensor, a tuple / list of them, or a `.sample` object."""
    if isinstance(out, (tuple, list)):
        return type(out)(fn(v) if isinstance(v, torch.Tensor) else v for v in out)
    if hasattr(out, "sample"):
        return type(out)(sample=fn(out.sample))
    return fn(out)
