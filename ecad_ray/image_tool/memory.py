"""Memory controls (attention slicing, model CPU offload, VAE slicing) and honest figures.

Peak-memory figures come from `ecad_ray.peak_memory` (one measure for "before" and "peak");
the environment block names the software and hardware the figures were measured on.
"""

from __future__ import annotations

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
