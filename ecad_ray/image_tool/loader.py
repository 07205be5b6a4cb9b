"""Load any diffusers text-to-image pipeline, or an ecad-ray registry model, for one image.

Registry names (`demo`, `pixart-alpha-256`, ...) go through `ecad_ray.models.loading` so they
get ECAD's transformer/pipeline split; hub ids and `save_pretrained` folders go through
`AutoPipelineForText2Image` with safetensors only. The pipeline class is read from
`model_index.json` first, so an image-to-image or inpainting model, or a model that is not
cached while offline, is refused in one line before any weights are read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ecad_ray.errors import UserError
from ecad_ray.models.loading import load_pipeline
from ecad_ray.models.registry import REGISTRY, ModelSpec, resolve_model

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A ready pipeline and where it came from."""

    pipe: object
    model_spec: ModelSpec
    registry: bool  # True: ECAD's own defaults (steps, cfg, size) apply
    folder: Path | None  # local save_pretrained folder, when the model is one
    dtype: torch.dtype
    variant: str | None  # "fp16" when the fp16 weight files were loaded
    notes: list[str] = field(default_factory=list)


def is_registry_name(model: str) -> bool:
    """True for names defined by ecad-ray itself rather than by a hub id or folder."""
    return model == "demo" or model in REGISTRY


def choose_dtype(name: str, model_spec: ModelSpec, registry: bool, device: torch.device) -> torch.dtype:
    """`auto`: fp32 on a CPU; on a GPU a registry model's own dtype, else bf16 where the GPU
    computes it natively and fp16 otherwise. Explicit names are taken as given."""
    if name != "auto":
        return _TORCH_DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    if registry:
        return _TORCH_DTYPES[model_spec.dtype]
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16  # native bf16 from Ampere (8.0) on


def load_model(model: str, dtype_name: str, device: torch.device, offload: bool = False) -> LoadedModel:
    """Resolve `model`, refuse what is not text-to-image, and load it for `device`.

    With `offload` the weights stay in CPU memory (model CPU offload moves each component to
    the GPU only while it runs), so the GPU never holds the whole model at once.
    """
    model_spec = resolve_model(model)
    registry = is_registry_name(model)
    dtype = choose_dtype(dtype_name, model_spec, registry, device)
    place = torch.device("cpu") if offload else device
    notes: list[str] = []
    if device.type == "cpu" and dtype == torch.float16:
        notes.append("fp16 on a CPU is slow and not every op supports it; --dtype auto uses fp32 here")
    if registry:
        pipe = load_pipeline(model_spec, place, dtype)
        return LoadedModel(pipe, model_spec, True, None, dtype, None, notes)
    folder = Path(model_spec.pipeline_source) if Path(model_spec.pipeline_source).is_dir() else None
    class_name = model_spec.pipeline_class or _hub_pipeline_class(model)
    check_text_to_image(model, class_name)
    variant = "fp16" if dtype == torch.float16 else None  # half the bytes to read, same numbers
    try:
        pipe = _from_pretrained(model, model_spec.pipeline_source, dtype, variant)
    except _NoVariant:
        notes.append("no fp16 weight variant in this model; loaded the default weights as fp16")
        variant = None
        pipe = _from_pretrained(model, model_spec.pipeline_source, dtype, None)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe.to(place), model_spec, False, folder, dtype, variant, notes)


def check_text_to_image(model: str, class_name: str) -> None:
    """Refuse pipelines `AutoPipelineForText2Image` cannot run as text-to-image.

    AutoPipeline would silently map e.g. an inpainting folder to its text-to-image sibling,
    whose UNet then fails on the wrong channel count; naming the mismatch up front is clearer.
    """
    from diffusers.pipelines import auto_pipeline as ap

    def names(*mappings) -> set[str]:
        return {cls.__name__ for mapping in mappings for cls in mapping.values()}

    if class_name in names(ap.AUTO_TEXT2IMAGE_PIPELINES_MAPPING, ap._AUTO_TEXT2IMAGE_DECODER_PIPELINES_MAPPING):
        return
    if class_name in names(ap.AUTO_INPAINT_PIPELINES_MAPPING, ap._AUTO_INPAINT_DECODER_PIPELINES_MAPPING):
        kind = "an inpainting pipeline"
    elif class_name in names(ap.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, ap._AUTO_IMAGE2IMAGE_DECODER_PIPELINES_MAPPING):
        kind = "an image-to-image pipeline"
    else:
        kind = "not a text-to-image pipeline that diffusers' AutoPipelineForText2Image knows"
    raise UserError(f"--model {model}: {class_name} is {kind}; give a text-to-image model")


def _hub_pipeline_class(model: str) -> str:
    """The `_class_name` in a hub model's model_index.json (from the cache when offline)."""
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(model)
    except (OSError, ValueError) as err:
        raise UserError(
            f"--model {model}: cannot read its model_index.json ({_first_line(err)}); if you are "
            f"offline it is not in the local Hugging Face cache: run `huggingface-cli download "
            f"{model}` where there is network and copy the cache (HF_HOME), or pass a local "
            "save_pretrained folder"
        ) from err
    class_name = config.get("_class_name")
    if not class_name:
        raise UserError(f"--model {model}: its model_index.json names no pipeline class")
    return class_name


class _NoVariant(Exception):
    """The requested weight variant has no files in this model."""


def _from_pretrained(model: str, source: str, dtype: torch.dtype, variant: str | None):
    from diffusers import AutoPipelineForText2Image

    kwargs = {"torch_dtype": dtype, "use_safetensors": True}
    if variant:
        kwargs["variant"] = variant
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # diffusers renaming torch_dtype -> dtype
            return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        message = _first_line(err)
        if variant and "variant" in message:
            raise _NoVariant(message) from err
        if "safetensors" in message:
            raise UserError(
                f"--model {model}: no safetensors weights ({message}); ecad-ray loads safetensors "
                "only: convert the .bin files (save_pretrained writes safetensors)"
            ) from err
        raise UserError(f"--model {model}: cannot load the pipeline ({message})") from err


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0].rstrip(".") if text else type(err).__name__
