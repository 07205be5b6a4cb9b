"""Any other diffusers text-to-image pipeline (Stable Diffusion, SDXL, SD3, Sana, ...).

`ecad-ray image` runs these through `AutoPipelineForText2Image`; they have no embeddings
pipeline (`generate`) and no ECAD caching schedule format, so this family answers only what
every diffusers pipeline shares (the `ModelFamily` defaults).
"""

from __future__ import annotations

from ecad_ray.models.families.base import ModelFamily


class DiffusersFamily(ModelFamily):
    """A diffusers pipeline ecad-ray knows nothing particular about."""

    name = "diffusers"


DIFFUSERS = DiffusersFamily()
