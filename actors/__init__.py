"""Ray-facing adapters: Ray Data callable classes and actors wrapping `ecad_ray` objects.

This package depends on `ecad_ray`; `ecad_ray` never imports it.
"""

import ecad_ray  # noqa: F401  (patches the torchvision trap before any model import in workers)
