"""Make a CPU-only torch install usable when PyPI's CUDA torchvision is also present.

PyPI ships torchvision built against CUDA torch. On a CPU torch its C++ extension fails to
register `torchvision::nms`, and `import torchvision` raises. transformers imports torchvision
whenever it is installed, so every diffusers/transformers model import would fail too (in the
driver and in every Ray worker). Declaring the two operator schemas first lets torchvision's
Python side import; the compiled detection ops stay unavailable, which ecad-ray never uses.
Where torchvision matches torch (CUDA machines, matching CPU builds) nothing is changed: its
own extension must be the one to define the namespace.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_LIBS: list = []  # keep the Library objects alive: their definitions vanish with them


def _torchvision_ops_unloadable() -> bool:
    """True when torchvision is installed, not yet imported, and its compiled ops fail to load."""
    if "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    extension = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if extension is None:
        return True
    import torch

    try:
        torch.ops.load_library(str(extension))  # what torchvision itself does first
    except (OSError, RuntimeError):
        return True
    return not torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU")


class _PatchBeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `patch_torchvision_ops` the first time anything looks for torchvision, then leaves.

    Lazy on purpose: checking torchvision means importing torch (~1.5 s), which processes that
    never touch a model (the CLI's --help, for one) should not pay for.
    transformers looks torchvision up with `find_spec` before importing it, so the patch
    still lands first.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            patch_torchvision_ops()
        return None  # the regular finders do the finding


def install_patch_hook() -> None:
    """Arrange for `patch_torchvision_ops` to run just before torchvision is first looked up."""
    if "torchvision" in sys.modules or _LIBS:
        return
    if not any(isinstance(f, _PatchBeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchBeforeTorchvision())


def patch_torchvision_ops() -> None:
    """Declare `torchvision::nms`/`qnms` when torchvision's compiled ops cannot load."""
    if _LIBS or not _torchvision_ops_unloadable():
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBS.append(lib)
