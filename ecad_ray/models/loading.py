"""Load a model's pipeline (whole, text half or denoising half) on a device and dtype.

The Ray plan loads the text encoder in one stage and the transformer + VAE in another, so
each half can be loaded without the other's weights. Missing weights (offline, not cached)
become one `UserError` naming what is missing and how to supply it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch

from ecad_ray.errors import UserError
from ecad_ray.models.registry import REGISTRY, ModelSpec, resolve_model, shipped_config, shipped_names

Part = Literal["all", "text", "denoise"]
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    """`None`/`auto` picks CUDA when present, else CPU; anything else is checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"--device {device}: not a torch device ({err})") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible on this machine")
    return dev


def resolve_dtype(dtype: str | None, model_spec: ModelSpec, device: torch.device) -> torch.dtype:
    """`auto`/`None` means the model's preferred dtype on a GPU and fp32 on a CPU."""
    if dtype in (None, "auto"):
        return _DTYPES[model_spec.dtype] if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _missing_weights(model_spec: ModelSpec, source: str, err: Exception) -> UserError:
    return UserError(
        f"model {model_spec.name}: cannot load {source} ({type(err).__name__}); it is not in the local "
        f"Hugging Face cache and the hub cannot be reached. Download it where there is network "
        f"(`huggingface-cli download {source}`) and copy the cache (HF_HOME), or pass --model "
        "with a local save_pretrained folder"
    )


_SKIP_FILES = ["*.bin", "*.pth", "*.ckpt", "*.pt", "*.msgpack", "*.onnx", "*.onnx_data", "*.h5"]


def fetch_weights(model_spec: ModelSpec) -> ModelSpec:
    """Make sure a hub model's files are local (downloading them once, in the driver, when online).

    Offline, a missing model becomes one `UserError` before any worker starts. Returns the
    model_spec re-resolved, so a hub id's family is known from its model_index.json.
    """
    if model_spec.builtin or Path(model_spec.pipeline_source).exists():
        return model_spec
    from huggingface_hub import snapshot_download

    sources = [(model_spec.pipeline_source, _SKIP_FILES + (["transformer/*"] if model_spec.transformer_source else []), None)]
    if model_spec.transformer_source and not model_spec.transformer_file:
        sources.append((model_spec.transformer_source, _SKIP_FILES, [f"{model_spec.transformer_subfolder}/*"]))
    for repo, ignore, allow in sources:
        try:
            snapshot_download(repo, ignore_patterns=ignore, allow_patterns=allow)
        except Exception as err:  # noqa: BLE001  (hub errors have many types; all mean "not available")
            raise _missing_weights(model_spec, repo, err) from err
    if model_spec.name in REGISTRY:
        return model_spec
    return replace(resolve_model(model_spec.name), transformer_file=model_spec.transformer_file)


def _pipeline_class(model_spec: ModelSpec):
    import diffusers

    if model_spec.pipeline_class:
        return getattr(diffusers, model_spec.pipeline_class)
    return diffusers.AutoPipelineForText2Image


def load_pipeline(model_spec: ModelSpec, device: torch.device, dtype: torch.dtype, part: Part = "all"):
    """Load the pipeline with only the components `part` needs (others are `None`)."""
    _quiet_loading()
    if model_spec.builtin:
        from ecad_ray.models.demo import build_components

        components = build_components()
        pipe = _pipeline_class(model_spec)(**components)
        if model_spec.transformer_file and part != "text":
            load_transformer_file(pipe.transformer, model_spec)
    else:
        pipe = _load_hub_pipeline(model_spec, dtype, part)
    pipe.set_progress_bar_config(disable=True)
    _drop_unused(pipe, part)
    if model_spec.builtin and dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    return pipe.to(device)


def _quiet_loading() -> None:
    """Per-component loading bars would interleave across actors; the run has its own progress.
    """
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _text_component_names(pipe) -> list[str]:
    return [n for n in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2") if hasattr(pipe, n)]


def _drop_unused(pipe, part: Part) -> None:
    """Free the half a stage does not use (diffusers allows `None` components)."""
    if part == "all":
        return
    text = set(_text_component_names(pipe))
    for name in list(pipe.components):
        keep = (name in text) if part == "text" else (name not in text)
        if not keep and name != "scheduler" and getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)


def _load_hub_pipeline(model_spec: ModelSpec, dtype: torch.dtype, part: Part):
    cls = _pipeline_class(model_spec)
    kwargs: dict = {"torch_dtype": dtype}
    if part == "text":
        kwargs.update(transformer=None, vae=None)
    elif part == "denoise":
        kwargs.update(dict.fromkeys(model_spec.model_family.text_components))
    if (model_spec.transformer_source or model_spec.transformer_file) and part != "text":
        transformer = _load_transformer(model_spec, dtype)
        if transformer is not None:
            kwargs["transformer"] = transformer
    try:
        pipe = cls.from_pretrained(model_spec.pipeline_source, **kwargs)
    except (OSError, ValueError) as err:
        raise _missing_weights(model_spec, model_spec.pipeline_source, err) from err
    if model_spec.transformer_file and part != "text" and "transformer" not in kwargs:
        load_transformer_file(pipe.transformer, model_spec)
    return pipe


def _load_transformer(model_spec: ModelSpec, dtype: torch.dtype):
    """The transformer from its own repo, or built from the shipped config and filled from a file."""
    import diffusers

    if model_spec.transformer_file and model_spec.name not in shipped_names():
        return None  # built by the pipeline from its own config, then filled (see caller)
    cls = getattr(diffusers, model_spec.model_family.transformer_class)
    if model_spec.transformer_file:
        config = {k: v for k, v in shipped_config(model_spec.name)["transformer"].items() if not k.startswith("_")}
        transformer = cls.from_config(config)
        load_transformer_file(transformer, model_spec)
        return transformer.to(dtype)
    try:
        return cls.from_pretrained(
            model_spec.transformer_source, subfolder=model_spec.transformer_subfolder, torch_dtype=dtype
        )
    except (OSError, ValueError) as err:
        raise _missing_weights(model_spec, model_spec.transformer_source, err) from err


def load_transformer_file(transformer: torch.nn.Module, model_spec: ModelSpec) -> None:
    """Fill `transformer` from `model_spec.transformer_file` (safetensors, or a weights-only torch file).

    The keys must be the diffusers layout of this transformer; a file for another architecture
    is named with the keys it lacks or adds, never loaded halfway.
    """
    path = Path(model_spec.transformer_file)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as err:  # noqa: BLE001  (unreadable or unsafe file: all one message)
        raise UserError(f"--transformer-weights {path}: cannot read weights ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise UserError(f"--transformer-weights {path}: expected a state dict, found {type(state).__name__}")
    own = transformer.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise UserError(
            f"--transformer-weights {path}: not a {type(transformer).__name__} of model {model_spec.name} in "
            f"diffusers layout: {'; '.join(parts)}"
        )
    transformer.load_state_dict(state, strict=True)
