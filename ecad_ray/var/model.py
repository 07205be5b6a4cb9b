"""The next-scale transformer (VAR's `models/var.py`), with FoundationVision's state-dict layout.

`VAR.state_dict()` has exactly the keys of FoundationVision's `var_d*.pth` (`lvl_embed`, and
the persistent buffers `lvl_1L`, `attn_bias_for_masking`, `blocks.*.attn.zero_k_bias`), so
their checkpoints load strictly and the forward pass is theirs (same operations in the same
order, float32 to rounding).

Tokens of all scales form one sequence (L = sum of pn²). Attention is block-causal: a token
sees every token of its own and earlier scales. Generation runs one scale per call and keeps
each layer's keys/values in a `LayerKV`, so a scale only computes its own tokens. Blocks
are adaLN-modulated by the condition (class label or prompt embedding).

FastVAR-style pruning hooks in `run_blocks`: inside a layer range, a block may run on a
subset of the current scale's tokens (`keep_idx_BK`) and the other positions are restored
from that block's output at an earlier scale (see `ecad_ray.var.pruning`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ecad_ray.var.config import VARConfig

# FoundationVision clamps the learned log attention scale at log(100) computed in float32.
MAX_SCALE_MUL = float(torch.tensor(100.0).log())


def level_index(patch_nums: tuple[int, ...]) -> torch.Tensor:
    """(1, L) int64: the scale index of every token (FoundationVision's `lvl_1L`)."""
    return torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)]).view(1, -1)


def block_causal_bias(patch_nums: tuple[int, ...]) -> torch.Tensor:
    """(1, 1, L, L) float: 0 where a token may attend (same or earlier scale), -inf elsewhere."""
    d = level_index(patch_nums).view(1, -1, 1)
    L = d.shape[1]
    return torch.where(d >= d.transpose(1, 2), 0.0, -torch.inf).reshape(1, 1, L, L).contiguous()


@dataclass
class LayerKV:
    """Keys and values one attention layer has seen so far in this generation (B, H, L, hd)."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this scale's keys/values and return everything seen so far."""
        self.k = k if self.k is None else torch.cat((self.k, k), dim=2)
        self.v = v if self.v is None else torch.cat((self.v, v), dim=2)
        return self.k, self.v

    @property
    def length(self) -> int:
        """Cached tokens."""
        return 0 if self.k is None else self.k.shape[2]


class SelfAttention(nn.Module):
    """Multi-head self-attention; optional cosine (l2-normalised) attention as in var_d16."""

    def __init__(self, cfg: VARConfig):
        super().__init__()
        C, H = cfg.embed_dim, cfg.num_heads
        self.num_heads, self.head_dim = H, C // H
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))  # saved (and used) as FoundationVision does
        self.proj = nn.Linear(C, C)
        self.attn_l2_norm = cfg.attn_l2_norm
        if cfg.attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None, kv: LayerKV | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q_BHLc, k_BHLc, v_BHLc = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_l2_norm:
            scale_mul = self.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp()
            q_BHLc = F.normalize(q_BHLc, dim=-1) * scale_mul
            k_BHLc = F.normalize(k_BHLc, dim=-1)
        if kv is not None:
            k_BHLc, v_BHLc = kv.append(k_BHLc, v_BHLc)
        out = F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, attn_mask=attn_bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    """Two-layer MLP with tanh-GELU."""

    def __init__(self, cfg: VARConfig):
        super().__init__()
        hidden = round(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AdaLNSelfAttn(nn.Module):
    """Transformer block: adaLN (scale, shift, gate from the condition) around attention and FFN."""

    def __init__(self, cfg: VARConfig):
        super().__init__()
        C = cfg.embed_dim
        self.C = C
        self.attn = SelfAttention(cfg)
        self.ffn = FFN(cfg)
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """adaLN parameters (B, 1, 6, C) for a condition; constant over scales, so generation
        computes them once per batch instead of once per scale."""
        return self.ada_lin(cond_BD).view(-1, 1, 6, self.C)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor | None, attn_bias: torch.Tensor | None = None,
                kv: LayerKV | None = None, mod_B16C: torch.Tensor | None = None) -> torch.Tensor:
        if mod_B16C is None:
            mod_B16C = self.modulation(cond_BD)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mod_B16C.unbind(2)
        x_BLC = x_BLC + self.attn(self.ln_wo_grad(x_BLC) * (scale1 + 1) + shift1, attn_bias, kv) * gamma1
        return x_BLC + self.ffn(self.ln_wo_grad(x_BLC) * (scale2 + 1) + shift2) * gamma2


class AdaLNBeforeHead(nn.Module):
    """Final adaLN before the vocabulary head."""

    def __init__(self, cfg: VARConfig):
        super().__init__()
        C = cfg.embed_dim
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """adaLN parameters (B, 1, 2, C) for a condition."""
        return self.ada_lin(cond_BD).view(-1, 1, 2, self.C)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor | None, mod_B12C: torch.Tensor | None = None) -> torch.Tensor:
        if mod_B12C is None:
            mod_B12C = self.modulation(cond_BD)
        scale, shift = mod_B12C.unbind(2)
        return self.ln_wo_grad(x_BLC) * (scale + 1) + shift


@dataclass
class Modulations:
    """adaLN parameters of every block and of the head for one batch of conditions."""

    blocks: list[torch.Tensor]  # per block (B, 1, 6, C)
    head: torch.Tensor  # (B, 1, 2, C)


@dataclass
class ScalePruning:
    """Pruning at one scale, plus the per-layer outputs remembered for restoration (mutable)."""

    ratio: float  # fraction of this scale's tokens each pruned layer skips, in [0, 1); 0 = none
    layer_start: int  # first pruned layer (inclusive)
    layer_end: int  # last pruned layer (exclusive)
    restore_BChw: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> last full output


class VAR(nn.Module):
    """Class- or text-conditional next-scale transformer over a tokenizer with `Cvae`-wide codes."""

    def __init__(self, cfg: VARConfig, Cvae: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        C = cfg.embed_dim
        self.C, self.Cvae, self.V = C, Cvae, vocab_size
        self.patch_nums = tuple(cfg.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.begin_ends = []
        cur = 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn
        L = cur

        if cfg.cond == "class":
            self.class_emb = nn.Embedding(cfg.num_classes + 1, C)  # last row: CFG's null class
        elif cfg.cond == "text":
            self.text_proj = nn.Linear(cfg.text_dim, C)
            self.null_cond = nn.Parameter(torch.zeros(1, C))
        else:
            raise ValueError(f"VARConfig.cond must be 'class' or 'text', got {cfg.cond!r}")
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        self.word_embed = nn.Linear(Cvae, C)
        self.blocks = nn.ModuleList(AdaLNSelfAttn(cfg) for _ in range(cfg.depth))
        self.head_nm = AdaLNBeforeHead(cfg)
        self.head = nn.Linear(C, vocab_size)

        # persistent, as in FoundationVision's checkpoints (the loader checks them against the scales)
        self.register_buffer("lvl_1L", level_index(self.patch_nums))
        self.register_buffer("attn_bias_for_masking", block_causal_bias(self.patch_nums))
        self.init_weights()

    def init_weights(self, std: float = 0.02, gate: float = 0.0) -> None:
        """Small normal weights. adaLN gates start at `gate`: 0 (each block starts as the identity,
        for training) or 1 (blocks act at once, for random-weight models used as stand-ins)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        for b in self.blocks:
            b.ada_lin[-1].weight.data[: 2 * self.C].zero_()  # gamma1, gamma2
            b.ada_lin[-1].bias.data[: 2 * self.C].fill_(gate)
        if gate == 0:
            self.head.weight.data.mul_(0.1)
        else:  # a stand-in: the condition and every token should visibly change the samples
            nn.init.normal_(self.head.weight, std=3 / math.sqrt(self.C))
            cond_layer = self.class_emb if self.cfg.cond == "class" else self.text_proj
            nn.init.normal_(cond_layer.weight, std=1.0)

    # ---- conditioning -------------------------------------------------------------------
    def cond_embed(self, cond: torch.Tensor, drop_B: torch.Tensor | None = None) -> torch.Tensor:
        """Condition vector per item: class labels (B,) or prompt embeddings (B, text_dim).

        `drop_B` marks items that get the null condition (CFG's unconditional branch).
        """
        if self.cfg.cond == "class":
            labels = cond.long()
            if drop_B is not None:
                labels = torch.where(drop_B, torch.full_like(labels, self.cfg.num_classes), labels)
            return self.class_emb(labels)
        cond_BD = self.text_proj(cond.float())
        if drop_B is not None:
            cond_BD = torch.where(drop_B[:, None], self.null_cond.expand_as(cond_BD), cond_BD)
        return cond_BD

    def cfg_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """(2B, D): the B conditional rows followed by B null rows."""
        B = cond.shape[0]
        both = torch.cat((cond, cond))
        drop = torch.cat((torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool))).to(cond.device)
        return self.cond_embed(both, drop)

    # ---- embeddings ---------------------------------------------------------------------
    def scale_pos(self, scale_index: int) -> torch.Tensor:
        """Level + position embedding of one scale's tokens (1, pn², C)."""
        b, e = self.begin_ends[scale_index]
        return self.lvl_embed(self.lvl_1L[:, b:e]) + self.pos_1LC[:, b:e]

    def start_tokens(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """Scale-0 input: the condition itself plus a learned start position."""
        B = cond_BD.shape[0]
        sos = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        return sos + self.scale_pos(0)

    def scale_tokens(self, scale_index: int, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Input of scale k > 0: the summed codes so far, area-downsampled to pn_k, embedded."""
        pn = self.patch_nums[scale_index]
        x = F.interpolate(f_hat_BChw, size=(pn, pn), mode="area").flatten(2).transpose(1, 2)
        return self.word_embed(x) + self.scale_pos(scale_index)

    def logits(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor | None,
               mods: "Modulations | None" = None) -> torch.Tensor:
        """Vocabulary logits (B, l, V)."""
        return self.head(self.head_nm(x_BlC, cond_BD, mods.head if mods else None))

    def modulations(self, cond_BD: torch.Tensor) -> "Modulations":
        """Every block's and the head's adaLN parameters for a condition (reused at every scale)."""
        return Modulations([b.modulation(cond_BD) for b in self.blocks], self.head_nm.modulation(cond_BD))

    # ---- training -----------------------------------------------------------------------
    def forward(self, cond_BD: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for every scale at once (B, L, V), block-causal mask."""
        B = cond_BD.shape[0]
        L = self.begin_ends[-1][1]
        x_BLC = torch.cat((
            cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1),
            self.word_embed(x_BLCv_wo_first_l.float()),
        ), dim=1)
        x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L[:, :L].expand(B, -1)) + self.pos_1LC[:, :L])
        attn_bias = self.attn_bias_for_masking[:, :, :L, :L]
        for block in self.blocks:
            x_BLC = block(x_BLC, cond_BD, attn_bias)
        return self.logits(x_BLC, cond_BD)

    # ---- one scale of generation --------------------------------------------------------
    def run_blocks(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor | None, kvs: list[LayerKV],
                   pruning: ScalePruning | None = None, mods: "Modulations | None" = None) -> torch.Tensor:
        """Run every block on one scale's tokens with KV caching; prune inside the layer range.

        Without `pruning` every layer sees all tokens. With it, layers in
        [layer_start, layer_end) remember their output whenever they see all tokens, and at a
        pruned scale compute only the pivotal tokens; the other positions are restored from
        that remembered output, area-interpolated to this size. A layer with nothing
        remembered yet (pruning at the first scale it runs) computes every token. `mods`
        (from `modulations`) saves recomputing the adaLN parameters at every scale.
        """
        from ecad_ray.var.pruning import run_layers

        def layer(li: int, x: torch.Tensor, keep_idx_BK: torch.Tensor | None) -> torch.Tensor:
            return self.blocks[li](x, cond_BD, None, kvs[li], mods.blocks[li] if mods else None)

        return run_layers(x_BlC, len(self.blocks), pruning, layer)
