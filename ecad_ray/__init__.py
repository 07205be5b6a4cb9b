"""ecad-ray: faster text-to-image generation (layer caching, token pruning) and what it costs.

The library layer: torch / diffusers / pyarrow code, importable and testable without a Ray
cluster. It knows nothing of Ray actors (those live in the top-level `actors` package).
"""

from ecad_ray._compat import install_patch_hook

install_patch_hook()

__version__ = "0.1.0"
