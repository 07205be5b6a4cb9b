"""Infinity's bitwise tokenizer (`infinity/models/bsq_vae/`), with their state-dict layout.

A FLUX-style conv autoencoder (GroupNorm + swish resnet blocks, no attention) whose latent has
`codebook_dim` channels, and a multi-scale binary spherical quantiser: at each scale the
residual is area-downsampled, l2-normalised per cell and snapped to +-1/sqrt(d) per channel
(one bit each), upsampled back (trilinear) and subtracted. Module names follow theirs (`Conv`
and `Normalize` wrappers give `*.conv.weight` / `*.norm.weight`; the quantiser is registered as
both `quantizer` and `quantize`, as their `AutoEncoder` does), so `infinity_vae_d32reg.pth`
loads strictly. The operations are theirs in the same order, so float32 results agree to
rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ecad_ray.var.infinity.config import BSQVAEConfig


class Conv(nn.Module):
    """A 2-D convolution under their wrapper name (`.conv`)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Normalize(nn.Module):
    """GroupNorm with 32 groups (24 when the width is not a multiple of 32), eps 1e-6."""

    def __init__(self, channels: int):
        super().__init__()
        groups = 32 if channels % 32 == 0 else 24 if channels % 24 == 0 else 0
        if not groups:
            raise ValueError(f"BSQ-VAE width {channels} must be a multiple of 32 or 24 (their GroupNorm)")
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.norm1, self.conv1 = Normalize(cin), Conv(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = Normalize(cout), Conv(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = Conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Pad right/bottom by one, 3x3 conv with stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels)
    mid.block_2 = ResnetBlock(channels, channels)
    return mid


class Encoder(nn.Module):
    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        ch, downs = cfg.ch, int(math.log2(cfg.patch_size))
        self.conv_in = Conv(cfg.in_channels, ch, 3, padding=1)
        in_mult = (1,) + tuple(cfg.ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(cfg.ch_mult):
            down = nn.Module()
            down.block = nn.ModuleList()
            block_in = ch * in_mult[level]
            for _ in range(cfg.num_res_blocks):
                down.block.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
            if level < downs:
                down.downsample = Downsample(block_in)
            self.down.append(down)
        self.mid = _mid(block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, cfg.codebook_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for down in self.down:
            for block in down.block:
                h = block(h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        ch, ups = cfg.ch, int(math.log2(cfg.patch_size))
        block_in = ch * cfg.ch_mult[-1]
        self.conv_in = Conv(cfg.codebook_dim, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        ups_list = []
        for level in reversed(range(len(cfg.ch_mult))):
            up = nn.Module()
            up.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                up.block.append(ResnetBlock(block_in, ch * cfg.ch_mult[level]))
                block_in = ch * cfg.ch_mult[level]
            if 1 <= level <= ups:
                up.upsample = Upsample(block_in)
            ups_list.insert(0, up)
        self.up = nn.ModuleList(ups_list)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for up in reversed(self.up):
            for block in up.block:
                h = block(h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class BSQ(nn.Module):
    """One scale of binary spherical quantisation (their `BSQ`, inference path)."""

    def __init__(self, codebook_dim: int):
        super().__init__()
        self.codebook_dim = codebook_dim
        self.codebook_scale = float(1 / math.sqrt(codebook_dim))
        self.register_buffer("mask", 2 ** torch.arange(codebook_dim - 1, -1, -1))  # saved, as theirs

    def bits_to_codes(self, bits_BdHW: torch.Tensor) -> torch.Tensor:
        """Bits (B, h, w, d) in {0, 1} -> codes (B, d, h, w): +-1/sqrt(d), l2-normalised per cell."""
        codes = bits_BdHW * self.codebook_scale * 2 - self.codebook_scale
        return F.normalize(codes, dim=-1).permute(0, 3, 1, 2)

    def quantize(self, x_BdHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (B, d, h, w), bits (B, h, w, d) uint8) of a latent."""
        z = F.normalize(x_BdHW.permute(0, 2, 3, 1), dim=-1)
        zhat = torch.where(z > 0, torch.tensor(1, dtype=z.dtype), torch.tensor(-1, dtype=z.dtype)) * (1.0 / self.codebook_dim ** 0.5)
        q = z + (zhat - z)  # their straight-through form; equal to zhat up to rounding
        return q.permute(0, 3, 1, 2), (q > 0).to(torch.uint8)


class MultiScaleBSQ(nn.Module):
    """Residual quantisation over the scale schedule (their `MultiScaleBSQ`)."""

    def __init__(self, codebook_dim: int):
        super().__init__()
        self.lfq = BSQ(codebook_dim)

    @staticmethod
    def upsample(codes_BdHW: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Their `z_interplote_up`: trilinear over (t=1, h, w)."""
        return F.interpolate(codes_BdHW.unsqueeze(2), size=(1, *size), mode="trilinear").squeeze(2)

    def forward(self, x_BdHW: torch.Tensor, scales: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(summed codes (B, d, H, W), bits per scale (B, w, w, d))."""
        H, W = x_BdHW.shape[-2:]
        residual = x_BdHW.unsqueeze(2)
        out, bits = 0.0, []
        for w in scales:
            r = residual if (w, w) == (H, W) else F.interpolate(residual, size=(1, w, w), mode="area")
            q, b = self.lfq.quantize(r.squeeze(2))
            q = q.unsqueeze(2)
            if (w, w) != (H, W):
                q = F.interpolate(q, size=(1, H, W), mode="trilinear").contiguous()
            residual = residual - q
            out = out + q
            bits.append(b)
        return out.squeeze(2), bits


class BSQVAE(nn.Module):
    """Encoder, decoder and multi-scale BSQ of Infinity's tokenizer."""

    def __init__(self, cfg: BSQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = MultiScaleBSQ(cfg.codebook_dim)
        self.quantize = self.quantizer  # their alias; both names are in their state dicts

    @property
    def codebook_dim(self) -> int:
        """Bits per latent cell."""
        return self.cfg.codebook_dim

    def encode(self, image_B3HW: torch.Tensor, scales: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Image in [-1, 1] -> (raw latent h, quantised latent z, bits per scale)."""
        h = self.encoder(image_B3HW).float()
        z, bits = self.quantizer(h, scales)
        return h, z, bits

    def decode(self, z_BdHW: torch.Tensor) -> torch.Tensor:
        """Latent -> image in [-1, 1] (clamped, as theirs)."""
        return self.decoder(z_BdHW).clamp(-1, 1)
