"""Next-scale generation, one call per scale (step-wise) or all scales at once (one-shot).

`VarPipeline.start` sets up a `GenerationState` (conditions, per-item generators, KV caches,
the summed latent `f_hat`); `step(state, ratio)` runs one scale with the given pruning
ratio (0 = full, (0, 1) = FastVAR pruning, >= 1 = skip); `finish(state)` decodes images.
`generate` is the one-shot path: it asks a controller for each scale's ratio and loops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ecad_ray.errors import UserError
from ecad_ray.var.config import SamplingConfig, VarModelConfig
from ecad_ray.var.controllers import Controller, NoPruning, describe
from ecad_ray.var.model import VAR, LayerKV, Modulations, ScalePruning
from ecad_ray.var.pruning import default_layer_range, transformer_flops
from ecad_ray.var.sampling import make_generators, sample_tokens
from ecad_ray.var.text import load_prompt_encoder, prompt_to_class
from ecad_ray.var.vqvae import VQVAE


@dataclass
class ScaleRecord:
    """What happened at one scale, and its latents when intermediates are kept."""

    scale_index: int
    width: int
    ratio: float
    skipped: bool
    seconds: float
    summed_BChw: torch.Tensor | None = None  # f_hat after this scale (full latent size)
    residual_BChw: torch.Tensor | None = None  # this scale's codes, upsampled + Phi (full size)
    unscaled_BChw: torch.Tensor | None = None  # this scale's codes at their own width
    bits_Bld: torch.Tensor | None = None  # Infinity: the bits drawn at this scale (B, w², d) uint8


@dataclass
class ScaleState:
    """What a controller may look at before choosing the next scale's ratio."""

    scale_index: int
    num_scales: int
    patch_nums: tuple[int, ...]
    ratios: list[float]  # ratios used so far
    f_hat_BChw: torch.Tensor  # summed latent so far (B, Cvae, h, w)


@dataclass
class GenerationState:
    """Everything that carries over between scales of one batch."""

    cond: torch.Tensor  # (B,) labels or (B, text_dim) prompt embeddings
    cond_BD: torch.Tensor  # (2B, C): conditional rows then CFG null rows
    mods: Modulations  # adaLN parameters of cond_BD, computed once for all scales
    generators: list[torch.Generator]
    f_hat_BChw: torch.Tensor
    kvs: list[LayerKV]
    pruning: ScalePruning
    keep_intermediates: bool
    scale_index: int = 0
    records: list[ScaleRecord] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        """Items in the batch (B)."""
        return self.cond.shape[0]

    def rows(self, pos: list[int]) -> torch.Tensor:
        """Transformer rows of the items at positions `pos`: b, then its CFG null row b + B when
        the batch runs null rows (rows are the conditional items first, then their null copies)."""
        B = self.batch_size
        idx = torch.tensor(pos, device=self.f_hat_BChw.device)
        return torch.cat([idx + k * B for k in range(self.cond_BD.shape[0] // B)])

    def take(self, pos: list[int]) -> "GenerationState":
        """The sub-batch of the items at positions `pos`, mid-generation (caches, generators and
        restoration maps follow), so it can continue on its own; per-item pruning splits a batch
        with this (`ecad_ray.var.items`). Intermediates are not kept in a sub-batch."""
        idx = torch.tensor(pos, device=self.f_hat_BChw.device)
        rows = self.rows(pos)

        def sub(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rows]

        mods = None if self.mods is None else Modulations([m[rows] for m in self.mods.blocks], self.mods.head[rows])
        return replace(
            self, cond=self.cond[idx], cond_BD=self.cond_BD[rows], mods=mods,
            generators=[self.generators[p] for p in pos], f_hat_BChw=self.f_hat_BChw[idx],
            kvs=[LayerKV(sub(kv.k), sub(kv.v)) for kv in self.kvs],
            pruning=ScalePruning(self.pruning.ratio, self.pruning.layer_start, self.pruning.layer_end,
                                 {li: t[rows] for li, t in self.pruning.restore_BChw.items()}),
            keep_intermediates=False, records=list(self.records))

    def pooled_condition(self) -> torch.Tensor:
        """One condition row per item, what a learned controller reads: (B,) class labels or
        (B, text_dim) prompt embeddings, as they are."""
        return self.cond


@dataclass
class GenerationResult:
    """Images in [0, 1] (B, 3, H, W), per-scale records, and where the ratios came from."""

    images_B3HW: torch.Tensor
    records: list[ScaleRecord]
    controller: str
    decode_seconds: float
    summed_images: dict[int, torch.Tensor] = field(default_factory=dict)  # scale -> (B, 3, H, W) in [0, 1]
    rescale_images: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        """Ratio used at each scale."""
        return [r.ratio for r in self.records]

    @property
    def transformer_seconds(self) -> float:
        """Wall time spent in the transformer and sampling over all scales."""
        return sum(r.seconds for r in self.records)


class ScaleLoop:
    """The scale-by-scale loop both VAR-family pipelines share (`VarPipeline`, Infinity's):
    a subclass sets `patch_nums` and provides `start`, `_run_scale` (one scale, not skipped) and
    `decode`; stepping, skipping, finishing and the one-shot `generate` are the same for both."""

    patch_nums: tuple[int, ...]

    def scale_state(self, state) -> ScaleState:
        """The controller's view of a batch before its next scale."""
        return ScaleState(state.scale_index, len(self.patch_nums), self.patch_nums,
                          [r.ratio for r in state.records], state.f_hat_BChw)

    def done(self, state) -> bool:
        """True once every scale has run or been skipped."""
        return state.scale_index >= len(self.patch_nums)

    @torch.inference_mode()
    def step(self, state, ratio: float = 0.0) -> ScaleRecord:
        """Run (or skip, ratio >= 1) the next scale; updates `state` in place."""
        if self.done(state):
            raise RuntimeError("all scales already generated; call finish()")
        if ratio < 0:
            raise ValueError(f"pruning ratio must be >= 0, got {ratio}")
        si = state.scale_index
        pn = self.patch_nums[si]
        t0 = time.perf_counter()
        if ratio >= 1:
            record = ScaleRecord(si, pn, float(ratio), True, 0.0)
        else:
            record = self._run_scale(state, si, float(ratio))
            record.seconds = time.perf_counter() - t0
        state.records.append(record)
        state.scale_index += 1
        return record

    @torch.inference_mode()
    def finish(self, state, controller: str = "step-wise") -> GenerationResult:
        """Decode the summed latent (and kept intermediates) to images in [0, 1]."""
        if not self.done(state):
            raise RuntimeError(f"only {state.scale_index} of {len(self.patch_nums)} scales generated")
        t0 = time.perf_counter()
        images = self.decode(state.f_hat_BChw)
        decode_seconds = time.perf_counter() - t0
        result = GenerationResult(images, state.records, controller, decode_seconds)
        for r in state.records:
            if r.summed_BChw is not None:
                result.summed_images[r.scale_index] = self.decode(r.summed_BChw)
                result.rescale_images[r.scale_index] = self.decode(r.residual_BChw)
        return result

    @torch.inference_mode()
    def generate(self, cond, seeds: list[int] | int, controller: Controller | None = None,
                 keep_intermediates: bool = False) -> GenerationResult:
        """All scales in one call; each scale's ratio comes from `controller` (default: none)."""
        controller = controller or NoPruning()
        state = self.start(cond, seeds, keep_intermediates)
        while not self.done(state):
            ratio = controller.ratio(state.scale_index, len(self.patch_nums), self.scale_state(state))
            self.step(state, ratio)
        return self.finish(state, describe(controller))


class VarPipeline(ScaleLoop):
    """A tokenizer + transformer pair that generates images scale by scale."""

    def __init__(self, config: VarModelConfig, vqvae: VQVAE, var: VAR, sampling: SamplingConfig | None = None,
                 layer_range: tuple[int, int] | None = None):
        self.config = config
        self.vqvae = vqvae.eval()
        self.var = var.eval()
        self.sampling = sampling or config.sampling
        self.layer_range = layer_range or default_layer_range(config.var.depth)
        self.patch_nums = tuple(config.var.patch_nums)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.var.head.weight.device

    # ---- what the family-independent run code asks of a pipeline (Infinity's answers too) ----
    @property
    def depth(self) -> int:
        """Transformer blocks."""
        return self.config.var.depth

    @property
    def text_conditional(self) -> bool:
        """Conditioned on prompts (else on class labels)."""
        return self.config.var.cond == "text"

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes of a class-conditional model (may be empty)."""
        return self.config.var.class_names

    @property
    def condition_width(self) -> int:
        """Width of an item's condition row for a learned controller: the classes (one-hot) or
        the prompt embedding's width (`GenerationState.pooled_condition`)."""
        v = self.config.var
        return v.num_classes if v.cond == "class" else v.text_dim

    def flops(self, ratios: list[float]) -> list[float]:
        """Transformer FLOPs per scale for one image at these ratios (`transformer_flops`)."""
        vq = self.config.vqvae
        return transformer_flops(self.config.var, vq.vocab_size, vq.z_channels, ratios, self.layer_range)

    def with_sampling(self, **changes: Any) -> "VarPipeline":
        """Same weights, other sampling settings (cfg, top_k, top_p)."""
        return VarPipeline(self.config, self.vqvae, self.var, replace(self.sampling, **changes), self.layer_range)

    # ---- conditions ---------------------------------------------------------------------
    def conditions(self, classes: list[int] | None = None, prompts: list[str] | None = None) -> torch.Tensor:
        """Condition tensor from class labels or prompts (a class model maps a prompt to a class)."""
        vcfg = self.config.var
        if vcfg.cond == "text":
            if prompts is None:
                raise ValueError("a text-conditional VAR needs prompts")
            encoder = load_prompt_encoder(vcfg.text_encoder, vcfg.text_dim, vcfg.text_pooling, vcfg.text_tokens)
            return encoder(prompts).to(self.device)
        if classes is None:
            if prompts is None:
                raise ValueError("give classes or prompts")
            classes = [prompt_to_class(p, vcfg.class_names) for p in prompts]
        bad = [c for c in classes if not 0 <= int(c) < vcfg.num_classes]
        if bad:
            raise UserError(f"--classes: {bad[0]} is outside 0..{vcfg.num_classes - 1} for this model")
        return torch.tensor([int(c) for c in classes], dtype=torch.long, device=self.device)

    # ---- step-wise API ------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, cond: torch.Tensor, seeds: list[int] | int, keep_intermediates: bool = False) -> GenerationState:
        """Begin a batch: empty caches, zero latent, one generator per item.

        `seeds` is one seed per item (an item's tokens depend on its seed only), or one int for
        the whole batch: a single generator then draws every item's tokens in turn, as
        FoundationVision's `autoregressive_infer_cfg(B, labels, g_seed=seed)` does, so the same
        weights, labels and seed give their tokens. Generators live on the model's device."""
        B = cond.shape[0]
        if isinstance(seeds, int):
            generators = make_generators([seeds], self.device)
        elif len(seeds) != B:
            raise ValueError(f"{len(seeds)} seeds for {B} conditions")
        else:
            generators = make_generators(seeds, self.device)
        hw = self.patch_nums[-1]
        cond_BD = self.var.cfg_cond(cond)
        return GenerationState(
            cond=cond,
            cond_BD=cond_BD,
            mods=self.var.modulations(cond_BD),
            generators=generators,
            f_hat_BChw=torch.zeros(B, self.config.vqvae.z_channels, hw, hw, device=self.device),
            kvs=[LayerKV() for _ in self.var.blocks],
            pruning=ScalePruning(0.0, *self.layer_range),
            keep_intermediates=keep_intermediates,
        )

    def _run_scale(self, state: GenerationState, si: int, ratio: float) -> ScaleRecord:
        B = state.batch_size
        pn = self.patch_nums[si]
        if si == 0:
            x_BlC = self.var.start_tokens(state.cond_BD)
        else:
            x_BlC = self.var.scale_tokens(si, state.f_hat_BChw).repeat(2, 1, 1)
        state.pruning.ratio = ratio
        x_BlC = self.var.run_blocks(x_BlC, state.cond_BD, state.kvs, state.pruning, state.mods)
        logits_BlV = self.var.logits(x_BlC, state.cond_BD, state.mods)
        t = self.sampling.cfg * (si / max(len(self.patch_nums) - 1, 1))  # guidance ramps up with scale
        logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
        idx_Bl = sample_tokens(logits_BlV, state.generators, self.sampling.top_k, self.sampling.top_p)
        quant = self.vqvae.quantize
        residual = quant.upsampled_codes(idx_Bl, si, self.patch_nums[-1])
        state.f_hat_BChw = state.f_hat_BChw + residual
        record = ScaleRecord(si, pn, ratio, False, 0.0)
        if state.keep_intermediates:
            record.summed_BChw = state.f_hat_BChw.clone()
            record.residual_BChw = residual
            record.unscaled_BChw = quant.embedding(idx_Bl).transpose(1, 2).reshape(B, -1, pn, pn)
        return record

    def decode(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [0, 1]."""
        return (self.vqvae.fhat_to_img(f_hat_BChw) + 1) / 2
