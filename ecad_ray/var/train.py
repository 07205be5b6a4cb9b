"""Train the shipped demo VARs on a CPU: tokenizer first, then the transformer.

Two recipes, one loop:
- `demo-var` (text-to-image): the demo's procedural shapes captions (ecad_ray/shapes.py,
  32 px, train split only), each caption turned once into its vector by the frozen text
  encoder the config names (the demo DiT's T5);
- `demo-var-digits` (class-conditional): scikit-learn's bundled 8x8 digits (1,797 images,
  no download) upscaled to 16x16 RGB, labels 0-9.
Stage 1 fits the multi-scale residual VQ tokenizer (reconstruction MSE + VQ loss, re-seeding
codes that fall out of use from the residuals being quantised); stage 2
encodes every image to its token maps once and fits the transformer with teacher forcing
(cross-entropy over all scales; 10% of conditions dropped to the null condition so CFG works).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import DEMO_MODELS, build_models, save_pipeline
from ecad_ray.var.config import VarModelConfig, demo_digits_config, preset
from ecad_ray.var.model import VAR
from ecad_ray.var.vqvae import VQVAE


@dataclass(frozen=True)
class TrainConfig:
    """Training budget and optimiser settings for the digits demo."""

    vq_steps: int = 400  # tokenizer updates (batch `batch_size`)
    var_steps: int = 800  # transformer updates
    batch_size: int = 48  # images per update
    vq_lr: float = 2e-3  # Adam learning rate for the tokenizer
    var_lr: float = 1e-3  # AdamW learning rate for the transformer (cosine decay after warmup)
    warmup: int = 50  # linear warmup updates for both stages
    label_drop: float = 0.1  # share of labels replaced by the null class (trains CFG's branch)
    label_smoothing: float = 0.1  # VAR's cross-entropy smoothing
    seed: int = 0  # data order and initial weights
    threads: int = 1  # torch threads (the machine is shared)
    vq_threads: int = 0  # torch threads for the tokenizer stage (0 = `threads`); its result depends on them
    num_images: int = 0  # use only the first N images (0 = the whole set); for quick checks
    data: str = "digits"  # "digits" (class labels) or "shapes" (captions through the text encoder)
    shapes_images: int = 20_000  # rendered shapes images (train-split captions)
    vq_restart_every: int = 0  # re-seed dead codes every N tokenizer updates (0 = never)
    vq_min_hits: float = 0.5  # a code hit fewer times per update (all scales) counts as dead


RECIPES = {  # per shipped model: the settings its weights were trained with
    "demo-var-digits": TrainConfig(),
    # re-seeding dead codes every 20 updates took the tokenizer from 30 to ~500 live codes of 512
    # and its judge ceiling on shapes from 0.77 to 0.92; batch 32 halves the cost per update.
    # The tokenizer trains at 1 thread: the same recipe at 2 threads came out at ceiling 0.85.
    # Measured in one run on an idle 2-core CPU: 40 min (tokenizer 12.5, transformer 27.5).
    "demo-var": TrainConfig(data="shapes", vq_steps=800, var_steps=3000, batch_size=32, vq_lr=2e-3,
                            var_lr=1.5e-3, warmup=100, threads=2, vq_threads=1, vq_restart_every=20),
}


def digits_dataset(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) images in [-1, 1] and (N,) labels from sklearn's bundled digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # N,1,8,8 in [0,1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    return (x * 2 - 1).expand(-1, 3, -1, -1).contiguous(), torch.tensor(d.target, dtype=torch.long)


def shapes_dataset(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """(N, 3, 32, 32) images in [-1, 1] and their captions, from the shapes train split."""
    from ecad_ray.shapes import make_dataset

    data = make_dataset(n, seed, "train")
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x.contiguous(), data.captions


def training_set(config: VarModelConfig, tc: TrainConfig, log: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and their conditions (labels, or prompt vectors from the config's text encoder)."""
    if tc.data == "digits":
        images, cond = digits_dataset(config.image_size)
    elif tc.data == "shapes":
        from ecad_ray.var.text import load_prompt_encoder

        images, captions = shapes_dataset(tc.num_images or tc.shapes_images, tc.seed)
        v = config.var
        encoder = load_prompt_encoder(v.text_encoder, v.text_dim, v.text_pooling, v.text_tokens)
        cond = torch.cat([encoder(captions[i:i + 512]) for i in range(0, len(captions), 512)])
        log(f"{len(captions)} captions -> {tuple(cond.shape)} prompt vectors ({v.text_encoder}, {v.text_pooling})")
    else:
        raise ValueError(f"TrainConfig.data must be 'digits' or 'shapes', got {tc.data!r}")
    if tc.num_images:
        images, cond = images[:tc.num_images], cond[:tc.num_images]
    return images, cond


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train_vqvae(vqvae: VQVAE, images: torch.Tensor, tc: TrainConfig, log: Callable[[str], None]) -> float:
    """Fit the tokenizer; returns the final reconstruction MSE on (up to) the first 4,096 images.

    A sample, not the whole set: the full pass cost ~2 min of the recipe's budget and moved the
    figure only in the fourth decimal.
    """
    g = torch.Generator().manual_seed(tc.seed)
    opt = torch.optim.Adam(vqvae.parameters(), lr=tc.vq_lr)
    vqvae.train()
    for step in range(tc.vq_steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, tc.vq_steps, tc.vq_lr, tc.warmup)
        batch = images[torch.randint(len(images), (tc.batch_size,), generator=g)]
        recon, vq_loss = vqvae(batch)
        rec_loss = F.mse_loss(recon, batch)
        loss = rec_loss + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        restarted = 0
        if tc.vq_restart_every and step % tc.vq_restart_every == 0 and step < 0.8 * tc.vq_steps:
            restarted = vqvae.quantize.restart_dead_codes(tc.vq_min_hits, g)  # step 0: data-dependent init
        if step % 50 == 0 or step == tc.vq_steps - 1:
            used = int((vqvae.quantize.ema_vocab_hit_SV.sum(0) >= tc.vq_min_hits).sum())
            log(f"vq step {step:4d} rec_mse {rec_loss.item():.4f} vq {vq_loss.item():.4f} "
                f"codes live {used}/{vqvae.quantize.vocab_size} re-seeded {restarted}")
    vqvae.eval()
    sample = images[:4096]
    with torch.no_grad():
        mse = sum(F.mse_loss(vqvae.fhat_to_img(_fhat(vqvae, sample[i:i + 256])), sample[i:i + 256], reduction="sum").item()
                  for i in range(0, len(sample), 256)) / sample.numel()
    return mse


def judge_reconstructions(vqvae: VQVAE, n: int = 512) -> dict[str, float]:
    """Judge accuracy on tokenized-then-decoded val-split renders: what the tokens can show."""
    from ecad_ray import judge
    from ecad_ray.shapes import make_dataset

    data = make_dataset(n, seed=1234, split="val")
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        recon = vqvae.fhat_to_img(_fhat(vqvae, x)).clamp(-1, 1)
    images = ((recon + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    fid = judge.score(data.captions, images)
    return {"colour": fid.colour, "shape": fid.shape}


def _fhat(vqvae: VQVAE, images: torch.Tensor) -> torch.Tensor:
    idx = vqvae.img_to_idx(images)
    hw = vqvae.quantize.patch_nums[-1]
    return sum(vqvae.quantize.upsampled_codes(i, si, hw) for si, i in enumerate(idx))


def train_var(var: VAR, vqvae: VQVAE, images: torch.Tensor, cond: torch.Tensor, tc: TrainConfig,
              log: Callable[[str], None]) -> float:
    """Fit the transformer on the frozen tokenizer's codes; returns the last logged loss."""
    with torch.no_grad():
        idx_parts = [vqvae.img_to_idx(images[i:i + 256]) for i in range(0, len(images), 256)]
        idx_per_scale = [torch.cat([p[s] for p in idx_parts]) for s in range(len(idx_parts[0]))]
        target_BL = torch.cat(idx_per_scale, dim=1)
        inputs = torch.cat([vqvae.quantize.teacher_inputs([p[i:i + 256] for p in idx_per_scale])
                            for i in range(0, len(images), 256)])
    g = torch.Generator().manual_seed(tc.seed + 1)
    opt = torch.optim.AdamW(var.parameters(), lr=tc.var_lr, weight_decay=0.05, betas=(0.9, 0.95))
    var.train()
    loss_val = float("nan")
    for step in range(tc.var_steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, tc.var_steps, tc.var_lr, tc.warmup)
        pick = torch.randint(len(images), (tc.batch_size,), generator=g)
        drop = torch.rand(tc.batch_size, generator=g) < tc.label_drop
        cond_BD = var.cond_embed(cond[pick], drop)
        logits_BLV = var(cond_BD, inputs[pick])
        loss = F.cross_entropy(logits_BLV.flatten(0, 1), target_BL[pick].flatten(), label_smoothing=tc.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        if step % 50 == 0 or step == tc.var_steps - 1:
            loss_val = loss.item()
            log(f"var step {step:4d} loss {loss_val:.4f}")
    var.eval()
    return loss_val


def train_recipe(model: str, out: str | Path | None = None, log: Callable[[str], None] = print,
                 **changes: int | None) -> dict:
    """`ecad-ray var train`: a shipped demo's recipe, with the given settings changed."""
    if model not in RECIPES:
        raise UserError(f"--model {model}: `var train` trains the shipped demos ({', '.join(RECIPES)})")
    changes = {k: v for k, v in changes.items() if v is not None}
    bad = [k for k, v in changes.items() if k != "seed" and v < 1]
    if bad:
        raise UserError(f"--{bad[0].replace('_', '-')}: must be >= 1")
    tc = replace(RECIPES[model], **changes)
    tc = replace(tc, warmup=min(tc.warmup, tc.vq_steps, tc.var_steps))
    return train_demo(out or DEMO_MODELS[model], preset(model), tc, log)


def train_demo(out: str | Path, config: VarModelConfig | None = None, tc: TrainConfig | None = None,
               log: Callable[[str], None] = print) -> dict:
    """Train tokenizer + transformer and save a safetensors generator at `out`."""
    config = config or demo_digits_config()
    tc = tc or RECIPES.get(config.name, TrainConfig())
    torch.set_num_threads(tc.vq_threads or tc.threads)
    t0 = time.time()
    images, cond = training_set(config, tc, log)
    vqvae, var = build_models(config, seed=tc.seed, for_training=True)
    log(f"data {tuple(images.shape)}; vqvae {sum(p.numel() for p in vqvae.parameters()) / 1e6:.2f}M params, "
        f"var {sum(p.numel() for p in var.parameters()) / 1e6:.2f}M params")
    rec_mse = train_vqvae(vqvae, images, tc, log)
    t_vq = time.time() - t0
    log(f"tokenizer done in {t_vq:.0f}s, reconstruction MSE (in [-1,1]) {rec_mse:.4f}")
    recon_reading = judge_reconstructions(vqvae) if tc.data == "shapes" else None
    if recon_reading:
        log(f"judge on reconstructions of held-out renders: colour {recon_reading['colour']:.3f} "
            f"shape {recon_reading['shape']:.3f} (the ceiling for the transformer)")
    for p in vqvae.parameters():
        p.requires_grad_(False)
    torch.set_num_threads(tc.threads)
    final_loss = train_var(var, vqvae, images, cond, tc, log)
    dataset = "sklearn load_digits, 16x16 RGB" if tc.data == "digits" else f"ecad_ray.shapes train split, {len(images)} images"
    notes = {"dataset": dataset, "train_config": asdict(tc), "vq_recon_mse": rec_mse,
             "var_final_loss": final_loss,
             "judge_on_reconstructions": recon_reading, "seconds_tokenizer": round(t_vq), "seconds_total": round(time.time() - t0)}
    save_pipeline(out, config, vqvae, var, extra=notes)
    log(f"saved {out} after {notes['seconds_total']}s")
    return notes
