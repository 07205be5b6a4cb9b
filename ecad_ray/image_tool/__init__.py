"""`ecad-ray image`: one image from any diffusers text-to-image model, with memory controls.

The quick single-prompt tool for trying a model, a scheduler or a memory setting, reporting
the environment, load / generation time and peak memory honestly. See docs/image.md.
"""

from ecad_ray.image_tool.options import ImageOptions, parse_size
from ecad_ray.image_tool.report import ImageReport, report_lines
from ecad_ray.image_tool.run import generate_image

__all__ = ["ImageOptions", "ImageReport", "generate_image", "parse_size", "report_lines"]
