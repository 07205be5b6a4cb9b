"""Load Infinity generators: FoundationVision's `infinity_*.pth` + `infinity_vae_*.pth` by path,
the `infinity-2b` registry name (their released files on the Hugging Face hub), and random-weight
presets (`infinity-tiny`, `random:infinity-2b`).

Transformer files are the plain state dict their `Infinity` writes: `cfg_uncond`,
`text_norm.weight`, `text_proj_for_sos.ca.*`, `text_proj_for_ca.{0,2}.*`, `pos_start`,
`lvl_embed.weight`, `word_embed.*`, `shared_ada_lin.1.*`, blocks as
`block_chunks.C.module.J.{ada_gss, sa.*, ca.*, ffn.*, ca_norm.*}` (or `blocks.N.*`),
`head_nm.ada_lin.1.*`, `head.*`. Tokenizer files hold `{"vae": state dict}` with `encoder.*`,
`decoder.*` (their `Conv` / `Normalize` wrappers: `*.conv.weight`, `*.norm.weight`; the plain
`*.weight` names their `load_cnn` also accepts are mapped the same way) and
`quantizer.lfq.mask` / `quantize.lfq.mask`. Sizes are read off the tensors; the scale schedule is
not in the files (the preset's, 1M by default). A key or shape this architecture lacks is
reported in one line (`ecad_ray.var.checkpoints._load_strict`).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import torch

from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import _count, _load_strict, _need, _read_state_dict
from ecad_ray.var.infinity.bsq_vae import BSQVAE
from ecad_ray.var.infinity.config import BSQVAEConfig, InfinityConfig, InfinityModelConfig, PRESETS, preset
from ecad_ray.var.infinity.pipeline import InfinityPipeline
from ecad_ray.var.infinity.transformer import Infinity

HUB_REPO = "FoundationVision/Infinity"
HUB_FILES = {"infinity-2b": ("infinity_2b_reg.pth", "infinity_vae_d32reg.pth")}
RANDOM_PREFIX = "random:"


def is_infinity_state_dict(sd: dict) -> bool:
    """True for an Infinity transformer (text-attentive pool + text norm), not a VAR."""
    return "text_norm.weight" in sd and any(k.startswith("text_proj_for_sos.") for k in sd)


def rename_transformer_keys(sd: dict) -> tuple[dict, int]:
    """`block_chunks.C.module.J.` -> `blocks.N.` (N = C * chunk size + J); returns the chunk count."""
    chunks = _count(sd, "block_chunks.")
    if not chunks:
        return dict(sd), 1
    per_chunk = _count(sd, "block_chunks.0.module.")
    out = {}
    for k, v in sd.items():
        m = re.match(r"block_chunks\.(\d+)\.module\.(\d+)\.(.*)", k)
        out[f"blocks.{int(m.group(1)) * per_chunk + int(m.group(2))}.{m.group(3)}" if m else k] = v
    return out, chunks


def infer_transformer_config(sd: dict, path, base: InfinityConfig, chunks: int) -> tuple[InfinityConfig, int]:
    """(transformer config, codebook_dim) read off a renamed state dict."""
    C = int(_need(sd, "pos_start", path).shape[-1])
    d = int(_need(sd, "word_embed.weight", path).shape[1])
    if int(_need(sd, "head.weight", path).shape[0]) != 2 * d:
        raise UserError(f"{path}: head.weight has {sd['head.weight'].shape[0]} rows, not 2 per bit of the "
                        f"{d}-bit codes (only Infinity's bitwise head, use_bit_label=1, is supported)")
    heads = int(_need(sd, "blocks.0.sa.scale_mul_1H11", path).shape[1])
    hidden = int(_need(sd, "blocks.0.ffn.fc1.weight", path).shape[0])
    maxlen, Ct5 = (int(n) for n in _need(sd, "cfg_uncond", path).shape)
    cfg = replace(base, depth=_count(sd, "blocks."), embed_dim=C, num_heads=heads, mlp_ratio=hidden / C,
                  text_channels=Ct5, text_maxlen=maxlen, block_chunks=chunks)
    if cfg.ffn_hidden != hidden or C % heads:
        raise UserError(f"{path}: FFN width {hidden} / heads {heads} do not fit width {C}")
    return cfg, d


def wrapper_names(sd: dict) -> dict:
    """Plain conv/norm names (`encoder.conv_in.weight`) -> their wrapper names
    (`encoder.conv_in.conv.weight`, `...norm1.norm.weight`), as their `load_cnn` maps them."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"((?:encoder|decoder)(?:\.[^.]+)*?)\.([a-z_0-9]+)\.(weight|bias)$", k)
        resample = m and m.group(2) == "conv" and m.group(1).endswith(("downsample", "upsample"))
        if m and (m.group(2) not in ("conv", "norm") or resample):
            k = f"{m.group(1)}.{m.group(2)}.{'norm' if m.group(2).startswith('norm') else 'conv'}.{m.group(3)}"
        out[k] = v
    return out


def infer_vae_config(sd: dict, path) -> BSQVAEConfig:
    """Tokenizer sizes read off a (wrapper-named) state dict."""
    ch = int(_need(sd, "encoder.conv_in.conv.weight", path).shape[0])
    levels = _count(sd, "encoder.down.")
    mult = tuple(int(_need(sd, f"encoder.down.{i}.block.0.conv1.conv.weight", path).shape[0]) // ch for i in range(levels))
    downs = sum(f"encoder.down.{i}.downsample.conv.conv.weight" in sd for i in range(levels))
    return BSQVAEConfig(codebook_dim=int(_need(sd, "encoder.conv_out.conv.weight", path).shape[0]), ch=ch,
                        ch_mult=mult, num_res_blocks=_count(sd, "encoder.down.0.block."), patch_size=2 ** downs)


def load_vae(path: str | Path) -> tuple[BSQVAEConfig, BSQVAE]:
    """An `infinity_vae_*.pth` on its own."""
    sd = wrapper_names(_read_state_dict(path, "Infinity BSQ tokenizer"))
    cfg = infer_vae_config(sd, path)
    vae = BSQVAE(cfg)
    for k in ("quantizer.lfq.mask", "quantize.lfq.mask"):  # derived from the bit count; check when present
        want = vae.state_dict()[k]
        if k in sd and not torch.equal(sd[k].long(), want):
            raise UserError(f"{path}: {k} is not the powers of two of a {cfg.codebook_dim}-bit code")
        sd[k] = want
    _load_strict(vae, sd, path)
    return cfg, vae.eval()


def load_infinity(model_path: str | Path, vae_path: str | Path, base: InfinityModelConfig | None = None,
                  device: str | torch.device = "cpu", name: str | None = None) -> InfinityPipeline:
    """FoundationVision `infinity_*.pth` + `infinity_vae_*.pth` into this package's architecture."""
    base = base or preset("infinity-2b")
    raw = _read_state_dict(model_path, "Infinity transformer")
    for buf in ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen"):
        raw.pop(buf, None)  # their load_state_dict drops these too
    sd, chunks = rename_transformer_keys(raw)
    t_cfg, d = infer_transformer_config(sd, model_path, base.transformer, chunks)
    vae_cfg, vae = load_vae(vae_path)
    if d != vae_cfg.codebook_dim:
        raise UserError(f"{model_path} and {vae_path} do not belong together: the transformer predicts {d}-bit codes, "
                        f"the tokenizer has {vae_cfg.codebook_dim} bits")
    model = Infinity(t_cfg, d)
    _load_strict(model, sd, model_path)
    config = replace(base, name=name or Path(model_path).stem, vae=vae_cfg, transformer=t_cfg)
    return InfinityPipeline(config, vae.to(device), model.to(device))


def build_random(config: InfinityModelConfig, seed: int = 0, device: str | torch.device = "cpu") -> InfinityPipeline:
    """Seeded random weights for a config (the tiny CPU model, or full size for speed checks)."""
    torch.manual_seed(seed)
    vae = BSQVAE(config.vae)
    model = Infinity(config.transformer, config.vae.codebook_dim)
    model.init_weights(seed)
    return InfinityPipeline(config, vae.to(device), model.to(device))


def hub_files(name: str, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """The released files of a registry name, from the Hugging Face cache (downloaded when online)."""
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    paths, missing = [], []
    for f in HUB_FILES[name]:
        try:
            paths.append(Path(hf_hub_download(HUB_REPO, f, local_files_only=offline, cache_dir=cache_dir)))
        except Exception:  # not cached / no network: reported below, all names at once
            missing.append(f)
    if missing:
        raise UserError(f"--model {name}: {', '.join(missing)} from the hub repo {HUB_REPO} not found "
                        f"({'offline, not in the Hugging Face cache' if offline else 'download failed'}); run "
                        f"`huggingface-cli download {HUB_REPO} {' '.join(HUB_FILES[name])}` or pass "
                        f"--model PATH/{HUB_FILES[name][0]} --vae PATH/{HUB_FILES[name][1]} "
                        f"(the text encoder google/flan-t5-xl is needed too)")
    return paths[0], paths[1]


def load_infinity_model(model: str, vae: str | None = None, device: str | torch.device = "cpu") -> InfinityPipeline:
    """Resolve an Infinity `--model`: `infinity-tiny` (random), `random:infinity-2b`, `infinity-2b`
    (the released weights), or a `.pth` path (with `--vae`)."""
    if model == "infinity-tiny":
        return build_random(preset(model), device=device)
    if model.startswith(RANDOM_PREFIX) and model[len(RANDOM_PREFIX):] in PRESETS:
        return build_random(preset(model[len(RANDOM_PREFIX):]), device=device)
    if model in HUB_FILES:
        model_path, vae_path = hub_files(model)
        return load_infinity(model_path, vae or vae_path, preset(model), device, name=model)
    if vae is None:
        raise UserError(f"--model {model}: an Infinity checkpoint needs --vae infinity_vae_d32reg.pth")
    return load_infinity(model, vae, device=device)
