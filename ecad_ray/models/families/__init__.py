"""Model families: one module per family owns everything the rest of ecad-ray asks about it.

    pixart.py             PixArt-α/Σ (and the PixArt-architecture demo)
    flux.py               FLUX.1
    diffusers_generic.py  any other diffusers text-to-image pipeline
    base.py               `ModelFamily`: the questions, with the answers all pipelines share

Loading, embeddings, generation, the image tool, caching hooks, schedule validation and the
cost model ask a family object (`family_named(spec.family)`); none compares family names.
This package imports nothing heavy (no torch) and nothing of caching, metrics or actors.
"""

from __future__ import annotations

from typing import Any, Iterable

from ecad_ray.errors import UserError
from ecad_ray.models.families.base import ModelFamily
from ecad_ray.models.families.diffusers_generic import DIFFUSERS
from ecad_ray.models.families.flux import FLUX
from ecad_ray.models.families.pixart import PIXART

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (PIXART, FLUX, DIFFUSERS)}
# Families that have ECAD caching schedules, in the order a transformer config is matched
# (FLUX first: a FLUX config may carry PixArt-like keys, never the reverse).
CACHEABLE: tuple[ModelFamily, ...] = (FLUX, PIXART)

__all__ = [
    "CACHEABLE",
    "DIFFUSERS",
    "FAMILIES",
    "FLUX",
    "PIXART",
    "ModelFamily",
    "family_named",
    "family_of_config",
    "family_of_pipeline_class",
    "family_of_schedule",
    "folder_defaults",
    "generation_family",
]


def family_named(name: str) -> ModelFamily:
    """The family called `name` (`ModelSpec.family`, `TransformerSpec.family`, `Schedule.family`)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"model family {name!r}: unknown; known: {', '.join(FAMILIES)}") from None


def generation_family(name: str) -> ModelFamily:
    """The family of a `ModelSpec.family` that `generate` can run (it has an embeddings pipeline)."""
    family = FAMILIES.get(name)
    if family is None or not family.embedding_keys:
        raise UserError(
            f"model family {name!r} has no embeddings pipeline; `generate` supports PixArt and FLUX "
            "models (use `ecad-ray image` for other diffusers pipelines)"
        )
    return family


def family_of_pipeline_class(pipeline_class: str | None) -> ModelFamily:
    """The family a diffusers pipeline class belongs to; any other class is generic diffusers."""
    for family in FAMILIES.values():
        if pipeline_class in family.pipeline_classes:
            return family
    return DIFFUSERS


def family_of_config(config: dict[str, Any]) -> ModelFamily:
    """The cacheable family of a diffusers transformer config, or a one-line `UserError`."""
    for family in CACHEABLE:
        if family.matches_config(config):
            return family
    cls = str(config.get("_class_name", ""))
    raise UserError(f"transformer config {cls or '?'}: not a PixArt or FLUX transformer; caching supports those two")


def family_of_schedule(num_single_blocks: int | None, components: Iterable[str]) -> ModelFamily:
    """The family a schedule was written for: FLUX when it counts single blocks or its first
    entry names FLUX sub-layers, PixArt otherwise (ECAD's schedule files name no family)."""
    if num_single_blocks is not None or any(c.startswith(FLUX.component_prefixes) for c in components):
        return FLUX
    return PIXART


def folder_defaults(pipeline_class: str, transformer_config: dict, vae_scale: int) -> dict[str, Any]:
    """`ModelSpec` defaults (size, guidance, text length) a local pipeline folder's configs give."""
    out: dict[str, Any] = {}
    for family in FAMILIES.values():
        out.update(family.folder_defaults(pipeline_class, transformer_config, vae_scale))
    return out
