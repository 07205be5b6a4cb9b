"""The `ecad-ray` command line: thin Typer commands over the library and the Ray plans.

It lives outside `ecad_ray` because it launches Ray plans built from `actors`, and the
library must never import `actors` (dependencies point one way: cli → actors → ecad_ray).
"""
