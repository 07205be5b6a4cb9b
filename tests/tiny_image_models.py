"""Tiny text-to-image pipelines written with `save_pretrained`, for the `ecad-ray image` tests.

Random weights, stock diffusers/transformers classes, built offline in about a second:
an SD-style UNet pipeline (CLIP text encoder, the letter-level BPE tokenizer of `tiny_models`)
and a PixArt-α pipeline (T5). Images are noise; shapes, settings and determinism are real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ecad_ray  # noqa: F401  (torchvision shim before diffusers/transformers)
import torch
from tiny_models import tiny_clip_tokenizer

WORDS = ["a", "an", "the", "red", "blue", "green", "cat", "dog", "photo", "of", "on", "grass"]


def build_sd_pipeline(workdir: Path, text_vocab_size: int | None = None):
    """A StableDiffusionPipeline: 2-level UNet (8 latent px), CLIP 2 layers, 2-level VAE (16 px).

    `text_vocab_size` above the tokenizer's makes the text encoder's embedding table (and so
    the model) as large as a memory test needs; the extra rows are never looked up.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(workdir / "clip_vocab")
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=text_vocab_size or len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0, eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=16,
    )
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_pixart_pipeline():
    """A PixArtAlphaPipeline: 2-layer transformer on 16x16 latents, tiny T5, 2-level VAE (32 px)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{w}" for w in WORDS]
    tokenizer = T5Tokenizer(vocab=[(p, -float(i)) for i, p in enumerate(pieces)], extra_ids=0, model_max_length=16)
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(pieces), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1)
    )
    transformer = PixArtTransformer2DModel(
        sample_size=16, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2,
        caption_channels=32, in_channels=4, out_channels=8, cross_attention_dim=32,
        norm_type="ada_norm_single", num_embeds_ada_norm=1000,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, sample_size=32,
    )
    return PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )


def save_folder(pipe, folder: Path, **kwargs) -> Path:
    """`save_pretrained` quietly; returns the folder."""
    pipe.save_pretrained(folder, **kwargs)
    return folder


def copy_with_index(src: Path, dst: Path, **index_updates) -> Path:
    """A copy of a saved pipeline with some model_index.json fields changed."""
    shutil.copytree(src, dst)
    index = json.loads((dst / "model_index.json").read_text())
    index.update(index_updates)
    (dst / "model_index.json").write_text(json.dumps(index))
    return dst


def build_model_zoo(root: Path, with_pixart: bool = True, with_fp16: bool = True) -> dict[str, Path]:
    """Every folder the tests need, by role (the PixArt and fp16 copies only when asked)."""
    sd = build_sd_pipeline(root)
    zoo = {"sd": save_folder(sd, root / "sd")}
    zoo["turbo"] = copy_with_index(zoo["sd"], root / "tiny-distilled", _name_or_path="stabilityai/sd-turbo")
    zoo["inpaint"] = copy_with_index(zoo["sd"], root / "inpaint", _class_name="StableDiffusionInpaintPipeline")
    zoo["img2img"] = copy_with_index(zoo["sd"], root / "img2img", _class_name="StableDiffusionImg2ImgPipeline")
    zoo["unet_only"] = root / "unet_only"
    sd.unet.save_pretrained(zoo["unet_only"])
    if with_pixart:
        zoo["pixart"] = save_folder(build_pixart_pipeline(), root / "pixart")
    if with_fp16:  # last: converts `sd` in place
        zoo["sd_fp16"] = save_folder(sd.to(torch.float16), root / "sd_fp16", variant="fp16")
    return zoo
