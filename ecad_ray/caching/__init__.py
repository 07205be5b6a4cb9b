"""ECAD caching schedules: read/write/validate them, apply them to PixArt and FLUX, count their cost.

The stable API (what `ecad-ray generate --schedule` and `ecad-ray benchmark` use):

    schedule = load_schedule(path)                       # frozen Schedule; save_schedule writes it back
    validate_schedule(schedule, pipeline_or_spec, source=path)   # UserError naming file and key path
    handle = apply_schedule(pipeline, schedule, cache_dtype=None)  # hooks; handle.remove(), handle.stats
    schedule_macs(schedule, spec) / schedule_mac_report(...)       # ECAD-comparable MACs
"""

from ecad_ray.caching.apply import ScheduleCacheConfig, ScheduleCacheHandle, apply_schedule, apply_schedule_cache
from ecad_ray.caching.liveness import MemoryReport, cache_memory
from ecad_ray.caching.macs import MacReport, schedule_mac_report, schedule_macs
from ecad_ray.caching.run_state import CacheStats
from ecad_ray.caching.schedule import Schedule, load_schedule, save_schedule, schedule_from_json
from ecad_ray.caching.spec import TransformerSpec, resolve_spec, shipped_spec, spec_from_transformer
from ecad_ray.caching.validate import validate_schedule

__all__ = [
    "CacheStats",
    "MacReport",
    "MemoryReport",
    "Schedule",
    "ScheduleCacheConfig",
    "ScheduleCacheHandle",
    "TransformerSpec",
    "apply_schedule",
    "apply_schedule_cache",
    "cache_memory",
    "load_schedule",
    "resolve_spec",
    "save_schedule",
    "schedule_from_json",
    "schedule_mac_report",
    "schedule_macs",
    "shipped_spec",
    "spec_from_transformer",
    "validate_schedule",
]
