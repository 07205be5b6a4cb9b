"""Counting the multiply-accumulates a transformer really performs, on the operators as they run
(shared by the VAR and Infinity FLOPs tests).

A `TorchDispatchMode` sees every `aten.linear` (the `nn.Linear` layers and `F.linear` on fused
projection weights) and every `scaled_dot_product_attention`, with their real shapes. torch's
`FlopCounterMode` is not used: on the CPU it misses most of the fused attention kernel's work.
Convolutions (tokenizer code) are left out; any other matrix product would make the count
incomplete, so it fails the test instead of being ignored.
"""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_UNCOUNTED_PRODUCTS = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.matmul.default,
                       aten.baddbmm.default, aten.einsum.default}


class MacCounter(TorchDispatchMode):
    """Sums the multiply-accumulates of linear layers and attention products while active."""

    def __init__(self):
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten.linear.default:
            x, w = args[0], args[1]
            self.macs += (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1]
        elif func is aten.scaled_dot_product_attention.default:
            q, k, v = args[:3]  # (B, H, Lq, E), (B, H, Lk, E), (B, H, Lk, Ev)
            self.macs += q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * (q.shape[3] + v.shape[3])
        elif func in _UNCOUNTED_PRODUCTS:
            raise AssertionError(f"{func} runs in the step but the counter does not count it")
        return func(*args, **kwargs)


