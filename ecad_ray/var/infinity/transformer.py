"""Infinity's transformer (`infinity/models/infinity.py` + `basic.py`), with their state-dict layout.

Per scale, the tokens of one square map attend (with KV caching) to every token of the scales
before and to themselves, and cross-attend to the prompt's text states. Conditioning: the text
states (Flan-T5) are RMS-normalised (`text_norm`); an attentive pool of them
(`text_proj_for_sos`) is the start token and the adaLN condition; an MLP of them
(`text_proj_for_ca`) is what every block cross-attends to. adaLN is shared: one
`shared_ada_lin` of the condition plus a learned per-block offset (`ada_gss`). Self-attention
is cosine attention (l2-normalised q/k, learned per-head scale clamped at log 100) with 2-D
rotary position embedding whose positions are spread over the 1M schedule's last width (their
`rope2d_normalized_by_hw=2`). The level embedding is added once, before the first block. The
head predicts two logits per bit of the `codebook_dim`-bit BSQ code of every token
(`use_bit_label=1`); there is no spatial patchify and no self-correction at inference (their
bitwise self-correction only flips bits of the training inputs).

Modules keep their names; blocks are stored as `block_chunks.C.module.J` (their
`block_chunks` > 1 layout, which the released 2B uses) or `blocks.N`, mapped in
`ecad_ray.var.infinity.checkpoints`. Pruning hooks into `run_blocks` exactly as VAR's does
(`ecad_ray.var.pruning.run_layers`); a pruned layer computes the rotary embedding of the
tokens it keeps, at their own positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ecad_ray.var.infinity.config import InfinityConfig
from ecad_ray.var.model import MAX_SCALE_MUL, LayerKV
from ecad_ray.var.pruning import run_layers


# ---- rotary embedding ------------------------------------------------------------------------
def rope_table(cfg: InfinityConfig, base: float = 10000.0) -> torch.Tensor:
    """(2, L, head_dim / 2): cos and sin for every token of the schedule, scale after scale.

    Row i of a w-wide map sits at grid position round(i * rope_grid / w) (their mode 2), so a
    token's frequencies do not depend on how many scales the schedule has."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))
    parts = []
    for w in cfg.scales:
        pos = (torch.arange(w) * (cfg.rope_grid / w)).round().int()
        rows = pos.reshape(w, 1).expand(w, w).reshape(-1)
        cols = pos.reshape(1, w).expand(w, w).reshape(-1)
        freqs = torch.cat((rows.float()[:, None] * inv_freq, cols.float()[:, None] * inv_freq), dim=-1)
        parts.append(freqs)
    freqs = torch.cat(parts)
    return torch.stack((freqs.cos(), freqs.sin()))


def apply_rope(x_BHLc: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of channels; `rope` is (2, 1|B, 1, L, c/2)."""
    x = x_BHLc.reshape(*x_BHLc.shape[:-1], -1, 2)
    cos, sin = rope[0], rope[1]
    out = torch.stack((cos * x[..., 0] - sin * x[..., 1], sin * x[..., 0] + cos * x[..., 1]), dim=-1)
    return out.reshape(x_BHLc.shape)


# ---- text ------------------------------------------------------------------------------------
@dataclass
class TextStates:
    """A batch of prompts' encoder states, padded: (B, T, Ct5) and each prompt's length."""

    states_BTC: torch.Tensor
    lens: list[int]

    @property
    def key_mask_B11T(self) -> torch.Tensor | None:
        """True where a position holds a real token; None when no prompt is padded (lets
        attention use its fastest kernel)."""
        T = self.states_BTC.shape[1]
        if all(n == T for n in self.lens):
            return None
        ar = torch.arange(T, device=self.states_BTC.device)
        return (ar[None, :] < torch.tensor(self.lens, device=ar.device)[:, None]).view(-1, 1, 1, T)

    @classmethod
    def from_list(cls, states: list[torch.Tensor]) -> "TextStates":
        """From one (T_i, Ct5) tensor per prompt."""
        lens = [int(s.shape[0]) for s in states]
        T, C = max(lens), states[0].shape[1]
        out = states[0].new_zeros(len(states), T, C)
        for i, s in enumerate(states):
            out[i, : s.shape[0]] = s
        return cls(out, lens)

    def cat(self, other: "TextStates") -> "TextStates":
        """These prompts followed by `other`'s."""
        a, b = self.states_BTC, other.states_BTC
        T = max(a.shape[1], b.shape[1])
        a, b = F.pad(a, (0, 0, 0, T - a.shape[1])), F.pad(b, (0, 0, 0, T - b.shape[1]))
        return TextStates(torch.cat((a, b)), self.lens + other.lens)


class RMSNorm(nn.Module):
    """Their `FastRMSNorm` (the fallback formula), with a learned weight."""

    def __init__(self, C: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(self.eps))) * self.weight


class CrossAttention(nn.Module):
    """Queries (the tokens, or one learned query per head for the pool) attend to text states."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int, for_attn_pool: bool = False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale = 1 / math.sqrt(self.head_dim)
        if for_attn_pool:
            self.mat_q = nn.Parameter(torch.zeros(1, num_heads, self.head_dim))
        else:
            self.mat_q = nn.Linear(embed_dim, embed_dim, bias=True)
        self.mat_kv = nn.Linear(kv_dim, embed_dim * 2, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def keys_values(self, text: TextStates) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) (B, H, T, c) of the text; constant over scales, so computed once per batch."""
        B, T, _ = text.states_BTC.shape
        kv = F.linear(text.states_BTC, self.mat_kv.weight, torch.cat((self.zero_k_bias, self.v_bias)))
        k, v = kv.view(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(self, q_BLC: torch.Tensor | None, kv: tuple[torch.Tensor, torch.Tensor], mask_B11T: torch.Tensor | None) -> torch.Tensor:
        k, v = kv
        B = k.shape[0]
        if q_BLC is None:  # attentive pool: one query
            q = self.mat_q.view(1, self.num_heads, 1, self.head_dim).expand(B, -1, -1, -1)
            L = 1
        else:
            L = q_BLC.shape[1]
            q = self.mat_q(q_BLC).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B11T, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, -1))


class TextAttentivePool(nn.Module):
    """The start token / adaLN condition: one learned query per head over the text."""

    def __init__(self, Ct5: int, D: int):
        super().__init__()
        head_dim = 64 if D > 4096 else 128
        self.ca = CrossAttention(D, Ct5, Ct5 // head_dim, for_attn_pool=True)

    def forward(self, text: TextStates) -> torch.Tensor:
        return self.ca(None, self.ca.keys_values(text), text.key_mask_B11T).squeeze(1)


# ---- blocks ----------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Cosine self-attention with 2-D RoPE and an optional KV cache."""

    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        C, H = cfg.embed_dim, cfg.num_heads
        self.num_heads, self.head_dim = H, C // H
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x_BLC: torch.Tensor, rope: torch.Tensor, attn_bias: torch.Tensor | None,
                kv: LayerKV | None) -> torch.Tensor:
        B, L, C = x_BLC.shape
        qkv = F.linear(x_BLC, self.mat_qkv.weight, torch.cat((self.q_bias, self.zero_k_bias, self.v_bias)))
        q, k, v = qkv.view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scale_mul = self.scale_mul_1H11.clamp_max(MAX_SCALE_MUL).exp()
        q = F.normalize(q, dim=-1, eps=1e-12).mul(scale_mul)
        k = F.normalize(k, dim=-1, eps=1e-12)
        q, k = apply_rope(q, rope).to(v.dtype), apply_rope(k, rope).to(v.dtype)  # one dtype under bf16 autocast
        if kv is not None:
            k, v = kv.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CrossAttnBlock(nn.Module):
    """adaLN self-attention, cross-attention to the text (LayerNorm'd input, no gate), adaLN FFN."""

    def __init__(self, cfg: InfinityConfig):
        super().__init__()
        C = cfg.embed_dim
        self.C, self.eps = C, cfg.norm_eps
        self.sa = SelfAttention(cfg)
        self.ca = CrossAttention(C, C, cfg.num_heads)
        self.ffn = FFN(C, cfg.ffn_hidden)
        self.ca_norm = nn.LayerNorm(C, eps=cfg.norm_eps)
        self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, C))

    def _ada_norm(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (self.C,), eps=self.eps).mul(scale.add(1)).add_(shift)

    def forward(self, x_BLC: torch.Tensor, shared_B16C: torch.Tensor, ca_kv: tuple[torch.Tensor, torch.Tensor],
                text_mask: torch.Tensor | None, rope: torch.Tensor, attn_bias: torch.Tensor | None = None,
                kv: LayerKV | None = None) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss + shared_B16C).unbind(2)
        x_BLC = x_BLC + self.sa(self._ada_norm(x_BLC, scale1, shift1), rope, attn_bias, kv).mul_(gamma1)
        x_BLC = x_BLC + self.ca(self.ca_norm(x_BLC), ca_kv, text_mask).float()
        return x_BLC + self.ffn(self._ada_norm(x_BLC, scale2, shift2)).mul(gamma2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C: int, eps: float):
        super().__init__()
        self.C, self.eps = C, eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return F.layer_norm(x_BLC, (self.C,), eps=self.eps).mul(scale.add(1)).add_(shift)


@dataclass
class TextContext:
    """What every scale of one batch reuses: the condition, the shared adaLN output, and each
    block's cross-attention keys/values of the text (rows: conditional, then CFG's null)."""

    cond_BD: torch.Tensor  # pooled text (rows, D)
    shared_B16C: torch.Tensor  # shared_ada_lin(cond) (rows, 1, 6, C)
    ca_kvs: list[tuple[torch.Tensor, torch.Tensor]]
    text_mask: torch.Tensor | None  # (rows, 1, 1, T); None when no prompt is padded


class Infinity(nn.Module):
    """Text-to-image next-scale transformer predicting `codebook_dim` bits per token."""

    def __init__(self, cfg: InfinityConfig, codebook_dim: int):
        super().__init__()
        self.cfg = cfg
        C, Ct5 = cfg.embed_dim, cfg.text_channels
        self.C, self.d = C, codebook_dim
        self.scales = tuple(cfg.scales)
        self.begin_ends = []
        cur = 0
        for w in self.scales:
            self.begin_ends.append((cur, cur + w * w))
            cur += w * w
        self.cfg_uncond = nn.Parameter(torch.zeros(cfg.text_maxlen, Ct5))
        self.text_norm = RMSNorm(Ct5, cfg.norm_eps)
        self.text_proj_for_sos = TextAttentivePool(Ct5, C)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(Ct5, C), nn.GELU(approximate="tanh"), nn.Linear(C, C))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.lvl_embed = nn.Embedding(15, C)
        self.word_embed = nn.Linear(codebook_dim, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.blocks = nn.ModuleList(CrossAttnBlock(cfg) for _ in range(cfg.depth))
        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps)
        self.head = nn.Linear(C, 2 * codebook_dim)
        self.register_buffer("rope", rope_table(cfg), persistent=False)

    def init_weights(self, seed: int = 0) -> None:
        """Seeded random weights for a stand-in model (every layer acts, samples vary with the text)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                n = torch.randn(p.shape, generator=g)
                if name.endswith("scale_mul_1H11"):
                    p.copy_(math.log(4.0) + 0.1 * n)
                elif name.endswith("norm.weight"):
                    p.copy_(1 + 0.05 * n)
                elif name.endswith("bias"):
                    p.zero_()
                elif "ada_gss" in name or "ada_lin" in name:
                    p.copy_(n * 0.5 / math.sqrt(p.shape[-1]))
                elif p.ndim >= 2 and name.endswith("weight") and "embed" not in name:
                    p.copy_(n / math.sqrt(p[0].numel()))
                else:
                    p.copy_(0.5 * n)

    @property
    def depth(self) -> int:
        """Transformer blocks."""
        return len(self.blocks)

    # ---- conditioning -------------------------------------------------------------------
    def null_text(self, lens: list[int]) -> TextStates:
        """CFG's unconditional text: the learned `cfg_uncond` rows, one prompt length each."""
        return TextStates.from_list([self.cfg_uncond[:n] for n in lens])

    def text_context(self, text: TextStates) -> TextContext:
        """Normalise and project the text once per batch (every scale reuses it)."""
        normed = TextStates(self.text_norm(text.states_BTC), text.lens)
        cond_BD = self.text_proj_for_sos(normed)
        ca = TextStates(self.text_proj_for_ca(normed.states_BTC), text.lens)
        shared = self.shared_ada_lin(cond_BD.float()).float().view(-1, 1, 6, self.C)
        return TextContext(cond_BD, shared, [b.ca.keys_values(ca) for b in self.blocks], ca.key_mask_B11T)

    # ---- embeddings ---------------------------------------------------------------------
    def start_tokens(self, ctx: TextContext) -> torch.Tensor:
        """Scale-0 input (rows, 1, C): the pooled text plus a learned start position."""
        return ctx.cond_BD.unsqueeze(1) + self.pos_start

    def scale_rope(self, scale_index: int) -> torch.Tensor:
        """(2, 1, 1, w², c/2) rotary table of one scale's tokens."""
        b, e = self.begin_ends[scale_index]
        return self.rope[:, None, None, b:e]

    def logits(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Bit logits (rows, l, 2d): for bit j of a token, entries 2j (bit 0) and 2j+1 (bit 1)."""
        return self.head(self.head_nm(x_BlC.float(), cond_BD.float()))

    # ---- teacher forcing (their `forward`) ----------------------------------------------
    def forward(self, text: TextStates, x_BLd_wo_first: torch.Tensor) -> torch.Tensor:
        """Logits for every scale at once (B, L, 2d) with the block-causal mask."""
        ctx = self.text_context(text)
        B = x_BLd_wo_first.shape[0]
        x = torch.cat((self.start_tokens(ctx).expand(B, 1, -1), self.word_embed(x_BLd_wo_first.float())), dim=1)
        L = x.shape[1]
        lvl = torch.cat([torch.full((w * w,), i) for i, w in enumerate(self.scales)])[:L].to(x.device)
        x = x + self.lvl_embed(lvl)[None]
        d = lvl.view(1, L, 1)
        bias = torch.where(d >= d.transpose(1, 2), 0.0, -torch.inf).reshape(1, 1, L, L).to(x)
        rope = self.rope[:, None, None, :L]
        for li, block in enumerate(self.blocks):
            x = block(x, ctx.shared_B16C, ctx.ca_kvs[li], ctx.text_mask, rope, bias)
        return self.logits(x, ctx.cond_BD)

    # ---- one scale of generation --------------------------------------------------------
    def run_blocks(self, x_BlC: torch.Tensor, scale_index: int, ctx: TextContext, kvs: list[LayerKV],
                   pruning=None) -> torch.Tensor:
        """Every block on one scale's tokens with KV caching; FastVAR pruning inside the layer range."""
        x_BlC = x_BlC + self.lvl_embed.weight[scale_index]
        rope = self.scale_rope(scale_index)

        def layer(li: int, x: torch.Tensor, keep_idx_BK: torch.Tensor | None) -> torch.Tensor:
            r = rope if keep_idx_BK is None else rope[:, 0, 0][:, keep_idx_BK].unsqueeze(2)  # (2, B, 1, K, c/2)
            return self.blocks[li](x, ctx.shared_B16C, ctx.ca_kvs[li], ctx.text_mask, r, None, kvs[li])

        return run_layers(x_BlC, self.depth, pruning, layer)
