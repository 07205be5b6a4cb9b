"""ecad-ray: faster text-to-image generation (layer caching, token pruning) and what it costs.

The library layer: torch / diffusers / pyarrow code, importable and testable without a Ray
cluster. It knows nothing of Ray actors (those live in the top-level `actors` package).
"""

from ecad_ray._compat import patch_torchvision_ops

patch_torchvision_ops()

__version__ = "0.1.0"
