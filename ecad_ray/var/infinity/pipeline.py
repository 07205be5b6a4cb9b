"""Infinity generation behind the VAR family's step-wise API (`start` / `step` / `finish`, and
the one-shot `generate` that asks a controller for each scale's ratio).

What differs from VAR's `VarPipeline`: the condition is the prompt's text states (cross-attended
by every block); each scale predicts `d` bits per token (two logits each, drawn with the same
top-k / top-p sampler and random stream as Infinity's); CFG is applied on the logits with the
same weight at every scale after dividing them by `tau`, and with `cfg == 1` no null rows are
run (as theirs); the next scale's input is the summed codes resized trilinearly. Pruning
ratios, skipped scales, controllers, records and results are the VAR family's own types, so
intermediates, spectra and evaluation read an Infinity run as any VAR run; the loop itself
(step, skip, finish, one-shot generate) is `ScaleLoop`'s, shared with `VarPipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ecad_ray.var.generation import GenerationState, ScaleLoop, ScaleRecord
from ecad_ray.var.infinity.bsq_vae import BSQVAE, MultiScaleBSQ
from ecad_ray.var.infinity.config import InfinityModelConfig, InfinitySampling
from ecad_ray.var.infinity.flops import NOMINAL_TEXT_TOKENS, infinity_flops
from ecad_ray.var.infinity.transformer import Infinity, TextContext, TextStates
from ecad_ray.var.model import LayerKV, ScalePruning
from ecad_ray.var.pruning import default_layer_range
from ecad_ray.var.sampling import make_generators, sample_tokens


@dataclass
class InfinityState(GenerationState):
    """A `GenerationState` whose condition is text; `ctx` holds what every scale reuses."""

    ctx: TextContext | None = None
    text_lens: list[int] = field(default_factory=list)  # each prompt's real tokens (the rest of `cond` is padding)

    @property
    def batch_size(self) -> int:
        """Items in the batch (B)."""
        return self.f_hat_BChw.shape[0]

    def take(self, pos: list[int]) -> "InfinityState":
        """The sub-batch at positions `pos` (see `GenerationState.take`), its text context included."""
        rows = self.rows(pos)
        c = self.ctx
        ctx = TextContext(c.cond_BD[rows], c.shared_B16C[rows], [(k[rows], v[rows]) for k, v in c.ca_kvs],
                          None if c.text_mask is None else c.text_mask[rows])
        return replace(super().take(pos), ctx=ctx, text_lens=[self.text_lens[p] for p in pos])

    def pooled_condition(self) -> torch.Tensor:
        """(B, text_channels): each prompt's text states averaged over its real tokens. A learned
        controller reads this instead of every token's state: one fixed-width row per item keeps
        the policy small and independent of the prompt's length."""
        rows = [s[:n].float().mean(dim=0) for s, n in zip(self.cond, self.text_lens)]
        return torch.stack(rows)


class InfinityPipeline(ScaleLoop):
    """Bitwise tokenizer + Infinity transformer, generating scale by scale."""

    family = "infinity"

    def __init__(self, config: InfinityModelConfig, vae: BSQVAE, model: Infinity,
                 sampling: InfinitySampling | None = None, layer_range: tuple[int, int] | None = None,
                 dtype: torch.dtype = torch.float32):
        self.config = config
        self.dtype = dtype  # the blocks' compute dtype (bf16 on a GPU, as Infinity runs); logits stay float32
        self.vae = vae.eval()
        self.model = model.eval()
        self.sampling = sampling or config.sampling
        self.layer_range = layer_range or default_layer_range(config.transformer.depth)
        self.patch_nums = tuple(config.transformer.scales)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.model.head.weight.device

    @property
    def depth(self) -> int:
        """Transformer blocks."""
        return self.model.depth

    def with_sampling(self, **changes: Any) -> "InfinityPipeline":
        """Same weights, other sampling settings (cfg, tau, top_k, top_p)."""
        return InfinityPipeline(self.config, self.vae, self.model, replace(self.sampling, **changes), self.layer_range,
                                self.dtype)

    def autocast(self):
        """The blocks' precision: autocast to `dtype` (off for float32), as their inference does."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    # ---- what the VAR family's run code asks of a pipeline ------------------------------
    text_conditional = True
    class_names: tuple[str, ...] = ()

    @property
    def condition_width(self) -> int:
        """Width of an item's condition row for a learned controller: the text encoder's width
        (`InfinityState.pooled_condition` averages the prompt's token states)."""
        return self.config.transformer.text_channels

    def flops(self, ratios: list[float], text_len: int = NOMINAL_TEXT_TOKENS) -> list[float]:
        """Transformer FLOPs per scale for one image at these ratios (`infinity_flops`)."""
        return infinity_flops(self.config, ratios, self.layer_range, text_len, 2 if self.sampling.cfg != 1 else 1)

    # ---- conditions ---------------------------------------------------------------------
    def conditions(self, classes: list[int] | None = None, prompts: list[str] | None = None) -> TextStates:
        """Text states of the prompts (Infinity is text-to-image only)."""
        if prompts is None:
            raise ValueError("Infinity is text-conditional: give prompts")
        from ecad_ray.var.infinity.text import encode_prompts

        t = self.config.transformer
        return encode_prompts(t.text_encoder, t.text_channels, prompts, self.device, max_tokens=min(512, t.text_maxlen))

    # ---- step-wise API ------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, cond: TextStates, seeds: list[int] | int, keep_intermediates: bool = False) -> InfinityState:
        """Begin a batch. One int seeds one generator for the whole batch (Infinity's `g_seed`);
        a list gives every item its own generator."""
        B = len(cond.lens)
        if isinstance(seeds, int):
            generators = make_generators([seeds], self.device)
        elif len(seeds) != B:
            raise ValueError(f"{len(seeds)} seeds for {B} prompts")
        else:
            generators = make_generators(seeds, self.device)
        text = TextStates(cond.states_BTC.to(self.device).float(), cond.lens)
        if self.sampling.cfg != 1:
            text = text.cat(self.model.null_text(cond.lens))
        ctx = self.model.text_context(text)
        hw = self.patch_nums[-1]
        return InfinityState(
            cond=cond.states_BTC, cond_BD=ctx.cond_BD, mods=None, generators=generators,
            f_hat_BChw=torch.zeros(B, self.model.d, hw, hw, device=self.device),
            kvs=[LayerKV() for _ in range(self.depth)], pruning=ScalePruning(0.0, *self.layer_range),
            keep_intermediates=keep_intermediates, ctx=ctx, text_lens=list(cond.lens))

    def scale_input(self, state: InfinityState, si: int) -> torch.Tensor:
        """Embedded input of scale `si` (rows, w², C): the start token at scale 0, else the summed
        codes resized (trilinear) to the scale's width (a skipped scale adds nothing to them)."""
        if si == 0:
            return self.model.start_tokens(state.ctx)
        w = self.patch_nums[si]
        x = MultiScaleBSQ.upsample(state.f_hat_BChw, (w, w)).flatten(2).transpose(1, 2)
        x = self.model.word_embed(x)
        rows = state.ctx.cond_BD.shape[0]
        return x.repeat(rows // x.shape[0], 1, 1)

    def _run_scale(self, state: InfinityState, si: int, ratio: float) -> ScaleRecord:
        B, w, s = state.batch_size, self.patch_nums[si], self.sampling
        state.pruning.ratio = ratio
        with self.autocast():
            x = self.model.run_blocks(self.scale_input(state, si), si, state.ctx, state.kvs, state.pruning)
        logits = self.model.logits(x, state.ctx.cond_BD).mul(1 / s.tau)
        if s.cfg != 1:
            logits = s.cfg * logits[:B] + (1 - s.cfg) * logits[B:]
        bits = sample_tokens(logits.reshape(B, -1, 2), state.generators, s.top_k, s.top_p)
        bits_Bhwd = bits.reshape(B, w, w, self.model.d)
        codes = self.vae.quantizer.lfq.bits_to_codes(bits_Bhwd)
        last = si == len(self.patch_nums) - 1
        residual = codes if last else MultiScaleBSQ.upsample(codes, state.f_hat_BChw.shape[-2:])
        state.f_hat_BChw = state.f_hat_BChw + residual
        record = ScaleRecord(si, w, ratio, False, 0.0)
        record.bits_Bld = bits_Bhwd.reshape(B, w * w, -1).to(torch.uint8)
        if state.keep_intermediates:
            record.summed_BChw = state.f_hat_BChw.clone()
            record.residual_BChw = residual
            record.unscaled_BChw = codes
        return record

    def decode(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Summed codes -> image in [0, 1]."""
        return (self.vae.decode(f_hat_BChw) + 1) / 2
