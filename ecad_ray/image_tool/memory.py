"""Memory controls (attention slicing, model CPU offload, VAE slicing) and honest figures.

Peak memory is what the accelerator allocator saw (`torch.cuda.max_memory_allocated`, reset
before loading) on a GPU, and the process's peak resident set size on a CPU. The environment
block names the software and hardware the figures were measured on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemorySettings:
    """What was actually switched on (a request a model cannot honour reads False)."""

    attention_slicing: bool
    offload: bool
    vae_slicing: bool


def apply_memory_settings(
    pipe, attn_slicing: bool, offload: bool, device: torch.device
) -> tuple[MemorySettings, list[str]]:
    """Switch on what was asked; return what took effect and a note for each refusal."""
    notes: list[str] = []
    vae = getattr(pipe, "vae", None)
    vae_slicing = vae is not None and hasattr(vae, "use_slicing") and hasattr(vae, "enable_slicing")
    if vae_slicing:
        vae.enable_slicing()
    sliced = False
    if attn_slicing or offload:
        sliced = _enable_attention_slicing(pipe)
        if not sliced:
            notes.append(
                f"attention slicing: no component of {type(pipe).__name__} supports it; "
                "attention runs unsliced"
            )
    offloaded = False
    if offload:
        if device.type == "cpu":
            notes.append(
                "--offload: model CPU offload needs an accelerator (diffusers' "
                "enable_model_cpu_offload); on a CPU the weights already live in main memory, "
                "so the model runs in place" + (" with attention slicing" if sliced else "")
            )
        else:
            pipe.enable_model_cpu_offload(device=device)
            offloaded = True
    return MemorySettings(attention_slicing=sliced, offload=offloaded, vae_slicing=vae_slicing), notes


def _enable_attention_slicing(pipe) -> bool:
    """Slice attention in every component that can; False when none can (e.g. PixArt)."""
    modules = [
        module
        for module in pipe.components.values()
        if isinstance(module, torch.nn.Module) and hasattr(module, "set_attention_slice")
    ]
    if modules:
        pipe.enable_attention_slicing()
    return bool(modules)


def reset_peak_memory(device: torch.device) -> None:
    """Start the GPU peak counter afresh (the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def current_memory(device: torch.device) -> int:
    """Bytes held now: allocated on the GPU, or this process's resident set on a CPU.

    Taken before loading, it shows how much of the peak the model and the run account for
    (a CPU process's peak RSS includes the Python and library imports before it).
    """
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    return _peak_rss_bytes(), "peak RSS of this process"


def _peak_rss_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def environment(device: torch.device) -> dict:
    """torch / CUDA versions and the device the run uses (GPU name and compute capability)."""
    import diffusers

    info = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": "CPU",
        "compute_capability": None,
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        info["device"] = torch.cuda.get_device_name(index)
        info["compute_capability"] = f"{major}.{minor}"
    return info
