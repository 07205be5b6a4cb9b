"""Shipped transformer configs (JSON) of the models ECAD published schedules for.

They let the cost model and schedule validation know PixArt-XL-2 and FLUX.1-dev shapes without
downloading any weights. Read them through `ecad_ray.caching.spec.shipped_spec`.
"""
