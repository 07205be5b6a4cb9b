"""Which model a name means, and how to load its parts.

A model is named by a registry name (`demo`, `pixart-alpha-256`, `pixart-sigma-256`,
`flux-dev`), a Hugging Face hub id, or a local folder written by `save_pretrained`. ECAD
runs PixArt with the transformer from one repo and text encoder / VAE / scheduler from
another, so a model spec keeps the two sources apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ecad_ray.errors import UserError
from ecad_ray.models.families import FLUX, PIXART, ModelFamily, family_named, family_of_pipeline_class, folder_defaults

TRANSFORMER_CONFIG_DIR = Path(__file__).with_name("transformer_configs")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's parts come from and the defaults it was trained for."""

    name: str  # the name the user gave (registry name, hub id or folder): recorded in every output
    family: str  # "pixart" | "flux" | "diffusers": picks the embedding and generation adapter
    pipeline_source: str  # hub id or folder for the pipeline (tokenizer, text encoder, VAE, scheduler)
    transformer_source: str | None = None  # separate transformer repo (ECAD's split), None = pipeline's
    transformer_subfolder: str | None = "transformer"
    pipeline_class: str | None = None  # diffusers class name; None = read from model_index.json
    height: int = 256
    width: int = 256
    steps: int = 20
    guidance_scale: float = 4.5
    max_sequence_length: int = 120  # text tokens the encoder sees (PixArt-α 120, Σ 300, FLUX 512)
    dtype: str = "fp32"  # preferred dtype on a GPU (fp32 on CPU always)
    builtin: bool = False  # True for `demo`: built from configs shipped in the package
    transformer_file: str | None = None  # transformer weights from one file (fine-tunes, ECAD's transformer_weights)
    notes: str = field(default="", compare=False)

    @property
    def model_family(self) -> ModelFamily:
        """The family object that answers everything family-specific about this model."""
        return family_named(self.family)


def _demo_spec() -> ModelSpec:
    from ecad_ray.models import demo  # imports torch: only when the demo is asked for

    cfg = demo.demo_config()
    return ModelSpec(
        name="demo",
        family=demo.FAMILY.name,
        pipeline_source="builtin:demo",
        pipeline_class=demo.PIPELINE_CLASS,
        height=cfg["image_size"],
        width=cfg["image_size"],
        steps=cfg["num_inference_steps"],
        guidance_scale=cfg["guidance_scale"],
        max_sequence_length=cfg["max_sequence_length"],
        builtin=True,
        notes="tiny PixArt-architecture model shipped in the package; runs offline on a CPU",
    )


REGISTRY: dict[str, ModelSpec] = {
    "pixart-alpha-256": ModelSpec(
        name="pixart-alpha-256",
        family=PIXART.name,
        pipeline_source="PixArt-alpha/PixArt-XL-2-1024-MS",
        transformer_source="PixArt-alpha/PixArt-XL-2-256x256",
        pipeline_class="PixArtAlphaPipeline",
        dtype="fp16",
        notes="ECAD's PixArt-α: 256² transformer + 1024-MS pipeline, fp16, 20 steps, guidance 4.5",
    ),
    "pixart-sigma-256": ModelSpec(
        name="pixart-sigma-256",
        family=PIXART.name,
        pipeline_source="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
        transformer_source="PixArt-alpha/PixArt-Sigma-XL-2-256x256",
        pipeline_class="PixArtSigmaPipeline",
        max_sequence_length=300,
        dtype="fp16",
        notes="ECAD's PixArt-Σ: 256² transformer + Σ 1024-MS pipeline, fp16",
    ),
    "flux-dev": ModelSpec(
        name="flux-dev",
        family=FLUX.name,
        pipeline_source="black-forest-labs/FLUX.1-dev",
        pipeline_class="FluxPipeline",
        guidance_scale=5.0,
        max_sequence_length=512,
        dtype="bf16",
        notes="FLUX.1-dev, bf16, 256², guidance 5, 20 steps (ECAD's setting)",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def registry_names() -> list[str]:
    """Every registry name, `demo` first."""
    return ["demo", *REGISTRY]


def _pipeline_class_of_folder(folder: Path) -> str | None:
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{index}: not a readable model_index.json ({err})") from err


def resolve_model(name: str) -> ModelSpec:
    """Turn a user's `--model` value into a `ModelSpec`, or raise a one-line `UserError`."""
    if name == "demo":
        return _demo_spec()
    if name in REGISTRY:
        return REGISTRY[name]
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(
                f"--model {name}: a single file is not a pipeline; give a folder written by "
                "save_pretrained (it holds model_index.json)"
            )
        cls = _pipeline_class_of_folder(path)
        if cls is None:
            raise UserError(
                f"--model {name}: no model_index.json in this folder; give a folder written by "
                "a diffusers pipeline's save_pretrained"
            )
        return ModelSpec(
            name=str(path),
            family=family_of_pipeline_class(cls).name,
            pipeline_source=str(path.resolve()),
            pipeline_class=cls,
            **_folder_defaults(path, cls),
        )
    if _HUB_ID.match(name):
        cls = _cached_pipeline_class(name)
        return ModelSpec(
            name=name, family=family_of_pipeline_class(cls).name, pipeline_source=name, pipeline_class=cls
        )
    raise UserError(
        f"--model {name}: unknown model; use one of {', '.join(registry_names())}, "
        "a Hugging Face hub id (owner/name) or a local save_pretrained folder"
    )


def _cached_pipeline_class(repo_id: str) -> str | None:
    """The pipeline class of a hub repo whose model_index.json is in the local cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model_index.json")
    if not isinstance(found, str):
        return None
    return _pipeline_class_of_folder(Path(found).parent)


def _folder_defaults(path: Path, cls: str) -> dict:
    """Defaults for a local PixArt/FLUX folder, read from its transformer and VAE configs."""
    try:
        tcfg = json.loads((path / "transformer" / "config.json").read_text())
        vcfg = json.loads((path / "vae" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    scale = 2 ** (len(vcfg.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return folder_defaults(cls, tcfg, scale)


def shipped_names() -> list[str]:
    """Registry models whose transformer config ships with the package (`pixart-alpha-256`, ...)."""
    return sorted(p.stem for p in TRANSFORMER_CONFIG_DIR.glob("*.json"))


@lru_cache(maxsize=None)
def shipped_config(name: str) -> dict[str, Any]:
    """The raw shipped JSON of a registry model (transformer config plus ECAD's sampling setting)."""
    path = TRANSFORMER_CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"--model {name}: no shipped transformer config; known: {', '.join(shipped_names())}")
    return json.loads(path.read_text())
