"""Multi-scale residual VQ tokenizer (VAR's VQVAE), with FoundationVision's module names.

An image becomes one latent map f (B, Cvae, h, w); scale k quantises the still-unexplained
residual, area-downsampled to `patch_nums[k]`², against one shared codebook; each scale's
codes are upsampled back (bicubic) through a small residual conv `Phi` and summed into
`f_hat`. The decoder turns `f_hat` into pixels. The state-dict layout is that of
FoundationVision's `vae_ch160v4096z32.pth` (including the `quantize.ema_vocab_hit_SV` training
buffer), so the real checkpoint loads into this code unchanged and reconstructs as theirs does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ecad_ray.var.config import VQVAEConfig


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a (1x1 when widths differ) shortcut."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x_BChw) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.C = c
        self.norm = _norm(c, groups)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BChw.shape
        q, k, v = self.qkv(self.norm(x_BChw)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)  # each B,HW,C
        h_BLC = F.scaled_dot_product_attention(q, k, v)
        return x_BChw + self.proj_out(h_BLC.transpose(1, 2).reshape(B, C, H, W))


class Downsample2x(nn.Module):
    """Stride-2 3x3 conv after right/bottom padding (halves h and w)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2x(nn.Module):
    """Nearest 2x upsampling then a 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int, cfg: VQVAEConfig):
        super().__init__()
        self.block_1 = ResnetBlock(c, c, cfg.num_groups)
        self.attn_1 = AttnBlock(c, cfg.num_groups) if cfg.using_mid_sa else nn.Identity()
        self.block_2 = ResnetBlock(c, c, cfg.num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> latent (B, Cvae, H/d, W/d)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        n_levels = len(cfg.ch_mult)
        in_mult = (1,) + tuple(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, 1, 1)
        self.down = nn.ModuleList()
        for i in range(n_levels):
            c_in, c_out = cfg.ch * in_mult[i], cfg.ch * cfg.ch_mult[i]
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(c_in, c_out, cfg.num_groups))
                c_in = c_out
                if cfg.using_sa and i == n_levels - 1:
                    level.attn.append(AttnBlock(c_out, cfg.num_groups))
            if i != n_levels - 1:
                level.downsample = Downsample2x(c_out)
            self.down.append(level)
        self.mid = _Mid(c_in, cfg)
        self.norm_out = _norm(c_in, cfg.num_groups)
        self.conv_out = nn.Conv2d(c_in, cfg.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != len(self.down) - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, Cvae, h, w) -> image (B, 3, h*d, w*d)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        n_levels = len(cfg.ch_mult)
        c_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c_in, 3, 1, 1)
        self.mid = _Mid(c_in, cfg)
        up_levels = []
        for i in reversed(range(n_levels)):
            c_out = cfg.ch * cfg.ch_mult[i]
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(c_in, c_out, cfg.num_groups))
                c_in = c_out
                if cfg.using_sa and i == n_levels - 1:
                    level.attn.append(AttnBlock(c_out, cfg.num_groups))
            if i != 0:
                level.upsample = Upsample2x(c_out)
            up_levels.insert(0, level)
        self.up = nn.ModuleList(up_levels)
        self.norm_out = _norm(c_in, cfg.num_groups)
        self.conv_out = nn.Conv2d(c_in, cfg.in_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Phi(nn.Conv2d):
    """Residual 3x3 conv applied to each scale's upsampled codes: h*(1-r) + conv(h)*r."""

    def __init__(self, c: int, resi_ratio: float):
        super().__init__(c, c, 3, 1, 1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (1 - self.resi_ratio) + super().forward(h) * self.resi_ratio


def phi_ticks(K: int) -> np.ndarray:
    """Relative depths (0..1) the K Phi convs stand for: 1/(3K) from either end when K == 4 (the
    released tokenizer), 1/(2K) otherwise, as FoundationVision's code has it. Computed exactly as
    numpy's linspace does: with 10 scales, scales 2 and 7 lie exactly half-way between two ticks,
    so the last bit decides which Phi they use."""
    margin = 1 / 3 / K if K == 4 else 1 / 2 / K
    return np.linspace(margin, 1 - margin, K)


class PhiPartiallyShared(nn.Module):
    """K Phi convs; scale k of n uses the one whose tick is nearest k/(n-1) (first on a tie).

    K = 1 is FoundationVision's fully shared Phi and K = number of scales its non-shared one;
    the loader maps those layouts' keys onto `qresi_ls`."""

    def __init__(self, phis: list[Phi]):
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)
        self.ticks = phi_ticks(len(phis))

    def for_scale(self, scale_index: int, num_scales: int) -> Phi:
        """The Phi used at `scale_index` of `num_scales`."""
        at = scale_index / max(num_scales - 1, 1)
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at)))]


class MultiScaleQuantizer(nn.Module):
    """One codebook quantising the latent residual at every scale (VAR's VectorQuantizer2)."""

    def __init__(self, cfg: VQVAEConfig, patch_nums: tuple[int, ...]):
        super().__init__()
        self.Cvae, self.vocab_size, self.beta = cfg.z_channels, cfg.vocab_size, cfg.beta
        self.patch_nums = tuple(patch_nums)
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.z_channels)
        self.quant_resi = PhiPartiallyShared([Phi(cfg.z_channels, cfg.quant_resi) for _ in range(cfg.share_quant_resi)])
        # codebook usage per scale (moving average of hits per training step), FoundationVision's
        # buffer: training reads it to re-seed dead codes (`restart_dead_codes`); saved so the
        # state dict has their layout (a file with another scale count loads too)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), cfg.vocab_size))
        self.recent_residuals: torch.Tensor | None = None  # training only: last pass's residual rows

    def phi(self, scale_index: int) -> Phi:
        """Phi conv for a scale of this quantizer's schedule."""
        return self.quant_resi.for_scale(scale_index, len(self.patch_nums))

    def nearest(self, rest_NC: torch.Tensor) -> torch.Tensor:
        """Index of the closest codebook vector for each row."""
        w = self.embedding.weight.detach()  # an index, no gradient
        d_NV = rest_NC.square().sum(1, keepdim=True) + w.square().sum(1)
        return d_NV.addmm_(rest_NC, w.T, alpha=-2, beta=1).argmin(dim=1)

    def upsampled_codes(self, idx_Bl: torch.Tensor, scale_index: int, hw: int) -> torch.Tensor:
        """Codes of one scale as a (B, Cvae, hw, hw) map after bicubic upsampling and Phi."""
        pn = self.patch_nums[scale_index]
        h_BChw = self.embedding(idx_Bl).transpose(1, 2).reshape(-1, self.Cvae, pn, pn)
        return self.phi(scale_index)(self.upsample(h_BChw, hw))

    @staticmethod
    def upsample(h_BChw: torch.Tensor, hw: int) -> torch.Tensor:
        """Bicubic to the full latent size (identity when already there)."""
        return h_BChw if h_BChw.shape[-1] == hw else F.interpolate(h_BChw, size=(hw, hw), mode="bicubic")

    def encode(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """Latent -> token indices per scale, each (B, pn*pn)."""
        return self.encode_with_fhat(f_BChw)[0]

    def encode_with_fhat(self, f_BChw: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Latent -> (token indices per scale, the summed quantised latent f_hat)."""
        B, C, H, W = f_BChw.shape
        f_rest = f_BChw.detach().clone()
        f_hat = torch.zeros_like(f_rest)
        idx_per_scale = []
        for si, pn in enumerate(self.patch_nums):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if pn != H else f_rest
            idx_N = self.nearest(rest.permute(0, 2, 3, 1).reshape(-1, C))
            idx_Bl = idx_N.view(B, pn * pn)
            h = self.upsampled_codes(idx_Bl, si, H)
            f_hat = f_hat + h
            f_rest = f_rest - h
            idx_per_scale.append(idx_Bl)
        return idx_per_scale, f_hat

    def forward(self, f_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: straight-through f_hat and the VQ loss."""
        B, C, H, W = f_BChw.shape
        f_no_grad = f_BChw.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        loss = f_BChw.new_zeros(())
        residuals = []
        for si, pn in enumerate(self.patch_nums):
            rest = F.interpolate(f_rest, size=(pn, pn), mode="area") if pn != H else f_rest
            rest_NC = rest.permute(0, 2, 3, 1).reshape(-1, C)
            idx_N = self.nearest(rest_NC)
            if self.training:
                with torch.no_grad():
                    hits = idx_N.bincount(minlength=self.vocab_size).to(self.ema_vocab_hit_SV.dtype)
                    self.ema_vocab_hit_SV[si].mul_(0.9).add_(hits, alpha=0.1)
                residuals.append(rest_NC)
            h = self.upsampled_codes(idx_N.view(B, pn * pn), si, H)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            loss = loss + F.mse_loss(f_hat.detach(), f_BChw) * self.beta + F.mse_loss(f_hat, f_no_grad)
        loss = loss / len(self.patch_nums)
        if self.training:
            self.recent_residuals = torch.cat(residuals)
        return (f_hat.detach() - f_no_grad) + f_BChw, loss

    @torch.no_grad()
    def restart_dead_codes(self, min_hits: float, generator: torch.Generator | None = None) -> int:
        """Re-seed every code hit less than `min_hits` times per step (summed over scales) with a
        residual vector the last training pass actually had to quantise; returns how many.

        Without this a codebook trained by gradient alone collapses onto a few dozen codes (the
        first demo tokenizer used 30 of 512 at its finest scale), which caps what any transformer
        on top of it can draw. Calling it before the first step is a data-dependent init."""
        if self.recent_residuals is None:
            raise RuntimeError("restart_dead_codes needs one training pass first")
        dead = (self.ema_vocab_hit_SV.sum(0) < min_hits).nonzero().flatten()
        if len(dead):
            rows = self.recent_residuals
            pick = torch.randint(len(rows), (len(dead),), generator=generator)
            self.embedding.weight[dead] = rows[pick].to(self.embedding.weight.dtype)
            self.ema_vocab_hit_SV[:, dead] = min_hits  # a grace period before it can be re-seeded
        return len(dead)

    def teacher_inputs(self, idx_per_scale: list[torch.Tensor]) -> torch.Tensor:
        """Transformer inputs for scales 1..n-1: f_hat so far, area-downsampled to the next size.

        Returns (B, L - 1, Cvae): the word-embedding inputs after the start token.
        """
        B = idx_per_scale[0].shape[0]
        H = self.patch_nums[-1]
        f_hat = idx_per_scale[0].new_zeros(B, self.Cvae, H, H, dtype=self.embedding.weight.dtype)
        out = []
        for si in range(len(self.patch_nums) - 1):
            f_hat = f_hat + self.upsampled_codes(idx_per_scale[si], si, H)
            nxt = self.patch_nums[si + 1]
            out.append(F.interpolate(f_hat, size=(nxt, nxt), mode="area").flatten(2).transpose(1, 2))
        return torch.cat(out, dim=1)


class VQVAE(nn.Module):
    """Encoder + multi-scale quantizer + decoder; images are in [-1, 1]."""

    def __init__(self, cfg: VQVAEConfig, patch_nums: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = MultiScaleQuantizer(cfg, patch_nums)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 3, 1, 1)

    def img_to_idx(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Token indices per scale for images in [-1, 1]."""
        return self.quantize.encode(self.quant_conv(self.encoder(img_B3HW)))

    def reconstruct(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Encode, quantise at every scale and decode: the tokenizer's reconstruction in [-1, 1]."""
        return self.fhat_to_img(self.quantize.encode_with_fhat(self.quant_conv(self.encoder(img_B3HW)))[1])

    def fhat_to_img(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Decode a summed latent to pixels in [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def forward(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: reconstruction in [-1, 1] (unclamped) and the VQ loss."""
        f_hat, vq_loss = self.quantize(self.quant_conv(self.encoder(img_B3HW)))
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss

