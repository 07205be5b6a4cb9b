"""Ray-facing adapters: Ray Data callable classes and actors wrapping `ecad_ray` library objects.

Depends on `ecad_ray`, never the reverse; holds no model or metric code of its own.
"""
