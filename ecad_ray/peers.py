"""The caching methods a user could pick instead of an ECAD schedule, each named by a small spec.

    pab:skip=2[,cross=2,range=100-800]   diffusers PyramidAttentionBroadcast: attention outputs reused
                                          for `skip` steps while the timestep is inside `range`
    fbc:threshold=0.05                    diffusers FirstBlockCache: skip the other blocks when the
                                          first block's residual changed less than `threshold`
    faster:skip=2                         diffusers FasterCache (attention reuse + CFG branch reuse)
    taylorseer:interval=5[,order=1,warmup=3]  diffusers TaylorSeerCache: attention outputs computed
                                          every `interval` steps after `warmup`, Taylor-extrapolated
                                          (to `order`) in between
    mag:threshold=0.06[,max_skip=3,retention=0.2]  diffusers MagCache: skip all blocks while the
                                          accumulated residual-magnitude error stays below
                                          `threshold`; its per-step `mag_ratios` are calibrated
                                          on an uncached run of the same job first
    cache-dit:F1B0,R0.12[,T1]             cache-dit's DBCache: first F / last B blocks always
                                          computed, the rest reused below residual threshold R;
                                          T1 adds its TaylorSeer calibrator of that order (optional extra)

diffusers' hooks attach to any module tree (`apply_*`), not only to models with `CacheMixin`
(PixArt has none), so they work on PixArt-α/Σ, the demo and FLUX. PAB needs to know the
current timestep; a forward pre-hook on the transformer reads it from the call.
TaylorSeerCache's default module patterns (`^transformer_blocks.*attn`, matched with
`re.fullmatch`) miss PixArt's `attn1` / `attn2`, so it would silently change nothing; it is
given patterns that match every block's attention. MagCache needs `mag_ratios` per model and
step count: `apply_method` runs diffusers' own calibration mode on the caller's `calibrate`
run (the job's first batch, uncached) and reads the ratios from the log line diffusers writes.
A spec that does not parse, or names an unknown method or option, is one `UserError` line
naming `--method`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ecad_ray.errors import UserError

METHODS = {
    "pab": {"skip": int, "cross": int, "range": "range"},
    "fbc": {"threshold": float},
    "faster": {"skip": int},
    "taylorseer": {"interval": int, "order": int, "warmup": int},
    "mag": {"threshold": float, "max_skip": int, "retention": float},
    "cache-dit": {},
}
_DBCACHE = re.compile(r"^F(\d+)B(\d+)(?:,R([0-9.]+))?(?:,T(\d+))?$")


@dataclass(frozen=True)
class PeerMethod:
    """A parsed `--method` spec: which method, its options, and the text the user gave (its name)."""

    kind: str
    options: dict = field(default_factory=dict)
    text: str = ""

    @property
    def name(self) -> str:
        """A file-name-safe name for tables and output folders (`pab_skip-2`)."""
        return re.sub(r"[^\w.-]+", "_", self.text.replace(":", "_").replace("=", "-"))


def parse_method(text: str) -> PeerMethod:
    """`pab:skip=2` -> PeerMethod("pab", {"skip": 2}); anything malformed is one line."""
    kind, _, rest = text.strip().partition(":")
    if kind not in METHODS:
        raise UserError(f"--method {text}: unknown method {kind!r}; use one of {', '.join(METHODS)}")
    if kind == "cache-dit":
        m = _DBCACHE.match(rest or "F1B0")
        if not m:
            raise UserError(f"--method {text}: expected cache-dit:F<n>B<m>[,R<threshold>][,T<order>], e.g. cache-dit:F1B0,R0.12")
        f, b, r, t = m.groups()
        return PeerMethod(kind, {"F": int(f), "B": int(b), "R": float(r or 0.08), "T": int(t) if t else 0}, text)
    options = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        kinds = METHODS[kind]
        if not eq or key not in kinds:
            known = ", ".join(f"{k}=..." for k in kinds)
            raise UserError(f"--method {text}: {part!r} is not an option of {kind} (options: {known})")
        options[key] = _value(text, key, value, kinds[key])
    return PeerMethod(kind, options, text)


def _value(text: str, key: str, value: str, kind):
    try:
        if kind == "range":
            lo, hi = value.split("-")
            return (int(lo), int(hi))
        number = kind(value)
    except ValueError:
        raise UserError(f"--method {text}: {key}={value} is not a valid {'LOW-HIGH range' if kind == 'range' else kind.__name__}") from None
    if number <= 0:
        raise UserError(f"--method {text}: {key} must be positive, got {value}")
    return number


# attention modules of every block, PixArt (attn1, attn2), FLUX (attn) and blocks.N.attn models
_ATTENTION_MODULES = [r"(single_)?transformer_blocks\.\d+\.attn\d?", r"blocks\.\d+\.attn\d?"]


def apply_method(pipe, method: PeerMethod, steps: int, calibrate: Callable[[], object] | None = None) -> Callable[[], None]:
    """Attach `method` to `pipe`'s transformer; returns the function that takes it off again.

    `calibrate` runs the pipeline once, uncached (MagCache measures its `mag_ratios` on it).
    """
    if method.kind == "cache-dit":
        return _cache_dit(pipe, method, steps)
    from diffusers import hooks

    transformer = pipe.transformer
    o = method.options
    undo: list[Callable[[], None]] = []
    clock = _timestep_clock(transformer, undo)
    if method.kind == "pab":
        skip = o.get("skip", 2)
        window = o.get("range", (100, 800))
        config = hooks.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=skip, cross_attention_block_skip_range=o.get("cross", skip),
            spatial_attention_timestep_skip_range=window, cross_attention_timestep_skip_range=window,
            current_timestep_callback=clock)
        hooks.apply_pyramid_attention_broadcast(transformer, config)
        names = ["pyramid_attention_broadcast"]
    elif method.kind == "taylorseer":
        config = hooks.TaylorSeerCacheConfig(
            cache_interval=o.get("interval", 5), max_order=o.get("order", 1),
            disable_cache_before_step=o.get("warmup", 3), cache_identifiers=_ATTENTION_MODULES,
            taylor_factors_dtype=transformer.dtype)
        hooks.apply_taylorseer_cache(transformer, config)
        names = ["taylorseer_cache"]
    elif method.kind == "mag":
        ratios = _mag_ratios(transformer, steps, calibrate, method, undo)
        config = hooks.MagCacheConfig(threshold=o.get("threshold", 0.06), max_skip_steps=o.get("max_skip", 3),
                                      retention_ratio=o.get("retention", 0.2), num_inference_steps=steps,
                                      mag_ratios=ratios)
        hooks.apply_mag_cache(transformer, config)
        names = ["mag_cache_leader_block_hook", "mag_cache_block_hook"]
    elif method.kind == "fbc":
        hooks.apply_first_block_cache(transformer, hooks.FirstBlockCacheConfig(threshold=o.get("threshold", 0.05)))
        names = ["fbc_leader_block_hook", "fbc_block_hook"]
    else:  # faster
        config = hooks.FasterCacheConfig(spatial_attention_block_skip_range=o.get("skip", 2),
                                         current_timestep_callback=clock, tensor_format="BCHW")
        hooks.apply_faster_cache(transformer, config)
        names = ["faster_cache_denoiser", "faster_cache_block"]
    # the root registry caches its list of child registries; one built while an earlier method's
    # hooks were on would hide the new hooks' state from the cache context (FBC after PAB failed)
    registry = hooks.HookRegistry.check_if_exists_or_initialize(transformer)
    if hasattr(registry, "invalidate_child_registries_cache"):
        registry.invalidate_child_registries_cache()

    def remove() -> None:
        registry = hooks.HookRegistry.check_if_exists_or_initialize(transformer)
        for name in names:
            registry.remove_hook(name, recurse=True)
        for fn in undo:
            fn()

    return remove


def _mag_ratios(transformer, steps: int, calibrate, method: PeerMethod, undo: list) -> list[float]:
    """MagCache's per-step ratios for this model and step count, by diffusers' calibration mode.

    Calibration computes every block and, at the last step, logs `MagCache Calibration
    Results: [...]` (and prints it); the log record is caught here, the print silenced.
    """
    import ast
    import contextlib
    import io
    import logging

    from diffusers import hooks

    if calibrate is None:
        raise UserError(f"--method {method.text}: MagCache needs an uncached calibration run, none was given")
    log = logging.getLogger("diffusers.hooks.mag_cache")
    found: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if text.startswith("MagCache Calibration Results:"):
                found.append(text.split(":", 1)[1])

    handler, level, propagate = Catch(), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    hooks.apply_mag_cache(transformer, hooks.MagCacheConfig(num_inference_steps=steps, calibrate=True))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            calibrate()
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
        registry = hooks.HookRegistry.check_if_exists_or_initialize(transformer)
        for name in ("mag_cache_leader_block_hook", "mag_cache_block_hook"):
            registry.remove_hook(name, recurse=True)
    if not found:
        raise UserError(f"--method {method.text}: MagCache's calibration run reported no ratios "
                        f"(does the model's transformer have blocks MagCache can hook?)")
    return [float(r) for r in ast.literal_eval(found[-1].strip())]


def _timestep_clock(transformer, undo: list) -> Callable[[], int]:
    """The timestep of the transformer's current call, read by a forward pre-hook.

    A timestep above the previous one starts a new image: the hooks' state (cached residuals,
    Taylor factors) is reset then, as a `CacheMixin` pipeline would, so one image's cache never
    leaks into the next. Stateful hooks also keep state per "cache context", which `CacheMixin`
    models set around each denoiser call; PixArt has none and runs its CFG pair as one call, so
    one context is set for the whole image.
    """
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    now = {"t": -1}

    def read(module, args, kwargs):
        t = kwargs.get("timestep")
        if t is None:
            return
        t = int(t.flatten()[0]) if hasattr(t, "flatten") else int(t)
        if t > now["t"]:
            HookRegistry.check_if_exists_or_initialize(module).reset_stateful_hooks()
            _set_cache_context(module, CacheContext("ecad_ray"))
        now["t"] = t

    handle = transformer.register_forward_pre_hook(read, with_kwargs=True, prepend=True)
    undo.append(handle.remove)
    undo.append(lambda: _set_cache_context(transformer, None))
    return lambda: now["t"]


def _cache_dit(pipe, method: PeerMethod, steps: int) -> Callable[[], None]:
    try:
        import cache_dit
    except ImportError:
        raise UserError(f"--method {method.text}: cache-dit is not installed (pip install cache-dit)") from None
    o = method.options
    calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=o["T"]) if o["T"] else None
    cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(
        Fn_compute_blocks=o["F"], Bn_compute_blocks=o["B"], residual_diff_threshold=o["R"],
        num_inference_steps=steps), calibrator_config=calibrator)
    return lambda: cache_dit.disable_cache(pipe)
