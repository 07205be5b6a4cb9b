"""Analytic multiply-accumulate count of a transformer run under a schedule (no tracing).

We count what ECAD's calflops numbers count, found by matching `metrics.by_inference_step`
of the published files: every `nn.Linear` / patch-embedding MAC of the transformer (text
encoder and VAE excluded), no MACs for the attention score/value products
(`scaled_dot_product_attention` is invisible to calflops), norms and activations free, and
`ecad_mac_batch` samples per step (2 for PixArt: the CFG batch; 2 for FLUX as well, although
FLUX.1-dev runs one). A reused sub-layer costs nothing (unless nothing is cached yet: a reuse
before the first compute recomputes, as at step 0); timestep / text embeddings, the
adaLN modulation linears and the output projection are paid every step. After a TGATE gate
step the CFG batch is dropped, so those steps count half the samples. Which linears each
sub-layer holds is the model family's to say (`ModelFamily.sublayer_macs`, `always_macs`);
this module applies the schedule and ECAD's counting rules to those figures.

Text length is where two conventions part (`CONVENTIONS`): ECAD counted every PixArt with
PixArt-α's 120 T5 tokens, so its PixArt-Σ figures equal its α figures, although Σ runs 300
tokens (default schedule: 5.714 TMACs as published, 6.292 at 300 tokens, +10.1 %). `model`
(the default) counts the tokens the model really runs; `ecad` reproduces the published numbers.
Every report names the convention it was counted in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ecad_ray.caching.schedule import Schedule, step_key
from ecad_ray.caching.spec import TransformerSpec
from ecad_ray.errors import UserError

ALWAYS = "always"  # key of the per-step cost paid whatever the schedule says
MODEL, ECAD = "model", "ecad"
CONVENTIONS = {
    MODEL: "text tokens the model runs (PixArt-Σ 300, PixArt-α 120, FLUX 512): the real cost",
    ECAD: "text tokens ECAD's published metrics count (120 for every PixArt, Σ included; FLUX 512)",
}


def counting_spec(spec: TransformerSpec, convention: str = MODEL) -> TransformerSpec:
    """`spec` at the text length `convention` counts (`model`: unchanged; `ecad`: ECAD's).

    Where ECAD's text length for the model is unknown (demo, a loaded transformer), the two
    conventions coincide: there is no published figure to reproduce.
    """
    if convention not in CONVENTIONS:
        raise UserError(f"--convention {convention}: use one of {', '.join(CONVENTIONS)}")
    if convention == ECAD and spec.ecad_text_len and spec.ecad_text_len != spec.text_len:
        return replace(spec, text_len=spec.ecad_text_len)
    return spec


def conventions_differ(spec: TransformerSpec) -> bool:
    """True when ECAD's published count and the model's real count use different text lengths."""
    return counting_spec(spec, ECAD).text_len != spec.text_len


def component_macs(spec: TransformerSpec, attention_products: bool = False) -> dict[str, int]:
    """MACs of one sample through each cacheable sub-layer of one block (the family's formulas).

    `attention_products` adds the score and value products (Q·Kᵀ, A·V) that ECAD's count
    leaves out; use it to predict run time rather than to compare with ECAD.
    """
    return spec.model_family.sublayer_macs(spec, attention_products)


def always_macs(spec: TransformerSpec) -> int:
    """MACs of one sample per step outside the cacheable sub-layers (the family's formula)."""
    return spec.model_family.always_macs(spec)


@dataclass(frozen=True)
class MacReport:
    """Total MACs of a schedule and where they go."""

    total: int
    by_step: dict[str, int]  # ECAD step key -> MACs of that step
    by_component: dict[str, int]  # component name (and "always") -> MACs over all steps
    full: int  # the all-recompute total at the same setting, for ratios
    convention: str = MODEL  # which text length was counted (`CONVENTIONS`)
    text_tokens: int = 0  # the text length that convention gave

    @property
    def ratio(self) -> float:
        """Fraction of the uncached cost this schedule pays."""
        return self.total / self.full

    def as_metrics(self) -> dict:
        """This report in ECAD's schedule-file `metrics` layout (what `schedule make` stores)."""
        return {
            "by_inference_step": {k: {"macs": v} for k, v in self.by_step.items()},
            "total_macs": self.total,
            "total_macs_T": self.total / 1e12,
        }


def _samples(spec: TransformerSpec, schedule: Schedule, step: int, cfg: bool) -> int:
    gate = schedule.tgate_gate_step if spec.model_family.supports_tgate else None
    if cfg and gate is not None and step >= gate:
        return max(1, spec.ecad_mac_batch // 2)
    return spec.ecad_mac_batch


def schedule_mac_report(schedule: Schedule, spec: TransformerSpec, cfg: bool = True,
                        attention_products: bool = False, convention: str = MODEL) -> MacReport:
    """Per-step and per-component MACs of `schedule` on `spec` by ECAD's counting rules.

    `convention` picks the text length (`CONVENTIONS`): `model` (default) the model's own,
    `ecad` the one ECAD's published `metrics` assume (they differ for PixArt-Σ).
    """
    spec = counting_spec(spec, convention)
    per = component_macs(spec, attention_products)
    always = always_macs(spec)
    full_step = always + sum(
        per[c] for b in spec.block_names for c in spec.components_of(b)
    )
    by_step: dict[str, int] = {}
    by_comp: dict[str, int] = {ALWAYS: 0}
    computed: set[tuple[str, str]] = set()  # a reuse before the first compute recomputes
    full = 0
    for s in range(schedule.num_inference_steps):
        k = _samples(spec, schedule, s, cfg)
        blocks = schedule.steps[step_key(s)]
        step_total = always * k
        by_comp[ALWAYS] += always * k
        for block in spec.block_names:
            entry = blocks[block]
            for comp in spec.components_of(block):
                if entry[comp] or (block, comp) not in computed:
                    computed.add((block, comp))
                    m = per[comp] * k
                    step_total += m
                    by_comp[comp] = by_comp.get(comp, 0) + m
        by_step[step_key(s)] = step_total
        full += full_step * spec.ecad_mac_batch
    return MacReport(total=sum(by_step.values()), by_step=by_step, by_component=by_comp, full=full,
                     convention=convention, text_tokens=spec.text_len)


def schedule_macs(schedule: Schedule, spec: TransformerSpec, cfg: bool = True, convention: str = MODEL) -> int:
    """Total MACs of `schedule` on `spec`; with `convention="ecad"`, ECAD's `metrics.total_macs`."""
    return schedule_mac_report(schedule, spec, cfg, convention=convention).total


class LinearMacCounter:
    """MACs of every `nn.Linear` (and patch-embedding `nn.Conv2d`) call under a module while
    active, counted by forward hooks: what a run really computed, whatever skipped the rest.

    The analytic count above is defined for ECAD schedules only; a peer (diffusers' caches,
    cache-dit) decides at run time what to skip, so its cost can only be counted. Counting the
    same layers for every method puts schedules and peers on one cost axis that, unlike
    seconds on a shared machine, does not depend on the load. For a schedule the counted ratio
    matches `schedule_mac_report(...).ratio` (tests/search/test_search_ray.py).

        with LinearMacCounter(pipe.transformer) as counter:
            pipe(...)
        counter.macs
    """

    def __init__(self, module):
        self.module = module
        self.macs = 0
        self._handles: list = []

    def _count(self, layer, args, output) -> None:
        import torch

        if isinstance(layer, torch.nn.Linear):
            self.macs += output.numel() * layer.in_features
        else:  # Conv2d: every output element is one dot product over in_channels x kernel
            self.macs += output.numel() * (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]

    def __enter__(self) -> "LinearMacCounter":
        import torch

        self.macs = 0
        for layer in self.module.modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                self._handles.append(layer.register_forward_hook(self._count))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
