"""Shipped transformer configs (JSON) of the registry models ECAD published schedules for.

Each file is a diffusers transformer config (`transformer`) plus ECAD's sampling setting
(`height`, `width`, `text_len`, optionally `ecad_text_len`, `ecad_mac_batch`). They let the
cost model and schedule validation know PixArt-XL-2 and FLUX.1-dev shapes, and a transformer
be built for a weights file, without downloading anything. Read them through
`ecad_ray.models.registry.shipped_config`.
"""
