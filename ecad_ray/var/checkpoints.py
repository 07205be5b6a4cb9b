"""Load and save VAR generators: the project's safetensors files, `random:` presets, and
FoundationVision's `var_d16/d20/d24/d30.pth` + `vae_ch160v4096z32.pth` checkpoints.

The project's format is one safetensors file whose metadata holds the config JSON and whose
tensors are `vqvae.*` and `var.*` (format 2: FoundationVision's key names and buffers; format
1, before them, had `lvl_emb` and no buffers and still loads).

FoundationVision checkpoints are the plain state dicts their `models/` package writes:
transformer keys `pos_start`, `pos_1LC`, `lvl_1L` (int64 scale index per token),
`attn_bias_for_masking` (block-causal 0/-inf mask), `word_embed.*`, `class_emb.weight` (one
extra row: the CFG null class), `lvl_embed.weight`, `blocks.N.attn.{scale_mul_1H11, q_bias,
v_bias, zero_k_bias, mat_qkv.weight, proj.*}`, `blocks.N.ffn.fc1/fc2.*`,
`blocks.N.ada_lin.1.*`, `head_nm.ada_lin.1.*`, `head.*`; tokenizer keys `encoder.*`,
`decoder.*`, `quant_conv.*`, `post_quant_conv.*`, `quantize.embedding.weight`,
`quantize.quant_resi.qresi_ls.K.*` and `quantize.ema_vocab_hit_SV`. This package's modules have
exactly that layout. Sizes are read off the tensors (depth, width, heads, MLP ratio, scale
widths from `lvl_1L`, classes, codebook, tokenizer widths and levels), the model is built to
match, and any key or shape this architecture does not have is reported by name, in one line,
instead of being loaded half-way.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ecad_ray.atomic import atomic_path
from ecad_ray.errors import UserError
from ecad_ray.var.config import PRESETS, VAR_PATCH_NUMS, VARConfig, VarModelConfig, VQVAEConfig, preset
from ecad_ray.var.generation import VarPipeline
from ecad_ray.var.model import VAR, block_causal_bias, level_index
from ecad_ray.var.vqvae import VQVAE

ASSETS = Path(__file__).parent / "assets"
DEMO_MODELS = {name: ASSETS / f"{name}.safetensors" for name in ("demo-var", "demo-var-digits")}  # shipped, trained
DEMO_WEIGHTS = DEMO_MODELS["demo-var"]
FORMAT = "ecad-ray-var/2"
# Magnitudes no trained float32 weight reaches: uninitialised memory (torch.empty) does.
_GARBAGE_ABS = 1e8


def build_models(config: VarModelConfig, seed: int = 0, for_training: bool = False) -> tuple[VQVAE, VAR]:
    """Tokenizer and transformer for a config, with seeded random weights.

    `for_training` starts every block as the identity (zero adaLN gates); otherwise the gates
    are open so a random-weight stand-in model computes something in every layer."""
    torch.manual_seed(seed)
    vqvae = VQVAE(config.vqvae, config.var.patch_nums)
    var = VAR(config.var, config.vqvae.z_channels, config.vqvae.vocab_size)
    if not for_training:
        var.init_weights(gate=1.0)
    return vqvae, var


def save_pipeline(path: str | Path, config: VarModelConfig, vqvae: VQVAE, var: VAR, extra: dict | None = None) -> None:
    """Write one safetensors file (atomically) with the config and training notes as metadata."""
    tensors = {f"vqvae.{k}": v.detach().contiguous().cpu() for k, v in vqvae.state_dict().items()}
    tensors |= {f"var.{k}": v.detach().contiguous().cpu() for k, v in var.state_dict().items()}
    meta = {"config": config.to_json(), "format": FORMAT}
    if extra:
        meta["training"] = json.dumps(extra)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> VarPipeline:
    """A generator saved by `save_pipeline`."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "config" not in meta:
            raise UserError(f"{path}: not an ecad-ray VAR file (no config in its safetensors metadata)")
        config = VarModelConfig.from_dict(json.loads(meta["config"]))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    vqvae, var = build_models(config)
    sd_vae = {k[6:]: v for k, v in tensors.items() if k.startswith("vqvae.")}
    sd_var = {k[4:]: v for k, v in tensors.items() if k.startswith("var.")}
    _load_strict(vqvae, _complete_vae_state(sd_vae, vqvae), path)
    _load_strict(var, _complete_var_state(_rename_var_keys(sd_var), var, path), path)
    return VarPipeline(config, vqvae.to(device), var.to(device))


def training_notes(path: str | Path) -> dict:
    """The training record stored with a shipped model (empty when none)."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("training", "{}"))


def load_var_model(model: str, vae: str | None = None, device: str | torch.device = "cpu") -> VarPipeline:
    """Resolve `--model`: a shipped demo (`demo-var`, `demo-var-digits`), `random:<preset>`, a
    `.safetensors` file, a FoundationVision `.pth` (with `vae`), or a folder holding `var_d*.pth`
    and `vae_*.pth`."""
    if model.startswith("infinity") or model.startswith("random:infinity"):
        from ecad_ray.var.infinity.checkpoints import load_infinity_model

        return load_infinity_model(model, vae, device)
    if model in DEMO_MODELS:
        if not DEMO_MODELS[model].exists():
            raise UserError(f"--model {model}: weights {DEMO_MODELS[model]} are missing; "
                            f"run `ecad-ray var train --model {model}`")
        return load_safetensors(DEMO_MODELS[model], device)
    if model.startswith("random:"):
        name = model.split(":", 1)[1]
        if name not in PRESETS:
            raise UserError(f"--model {model}: unknown preset (choose from {', '.join(PRESETS)})")
        cfg = preset(name)
        vqvae, var = build_models(cfg)
        return VarPipeline(cfg, vqvae.to(device), var.to(device))
    path = Path(model)
    if path.is_dir():
        var_files, vae_files = sorted(path.glob("var_d*.pth")), sorted(path.glob("vae_*.pth"))
        if len(var_files) != 1 or (vae is None and len(vae_files) != 1):
            raise UserError(f"--model {model}: expected one var_d*.pth and one vae_*.pth in the folder "
                            f"(found {len(var_files)} and {len(vae_files)})")
        return load_foundation_vision(var_files[0], vae or vae_files[0], device=device)
    if not path.exists():
        raise UserError(f"--model {model}: not {', '.join(DEMO_MODELS)}, random:<preset>, nor an existing file or folder")
    if path.suffix == ".safetensors":
        return load_safetensors(path, device)
    if path.suffix in (".pth", ".pt"):
        from ecad_ray.var.infinity.checkpoints import is_infinity_state_dict, load_infinity_model

        if is_infinity_state_dict(_read_state_dict(path, "transformer")):
            return load_infinity_model(str(path), vae, device)
        if vae is None:
            raise UserError(f"--model {model}: a FoundationVision VAR checkpoint needs --vae vae_ch160v4096z32.pth")
        return load_foundation_vision(path, vae, device=device)
    raise UserError(f"--model {model}: unknown file type {path.suffix!r} (.safetensors or .pth)")


# ---- FoundationVision ------------------------------------------------------------------------
def _read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} checkpoint not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors vary by torch version
        raise UserError(f"{path}: cannot read as a torch state dict ({type(err).__name__}: {err})") from err
    for wrapper in ("state_dict", "model", "trainer", "vae"):  # "vae": Infinity's tokenizer files
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise UserError(f"{path}: expected a flat state dict of tensors ({what})")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in sd.items()}




def _rename_var_keys(sd: dict) -> dict:
    """Names written before this package used FoundationVision's (`lvl_emb`) -> theirs."""
    if "lvl_emb.weight" in sd and "lvl_embed.weight" not in sd:
        sd = {("lvl_embed.weight" if k == "lvl_emb.weight" else k): v for k, v in sd.items()}
    return sd


def _rename_vae_keys(sd: dict) -> dict:
    """FoundationVision's fully shared (`quant_resi.qresi.*`) and non-shared (`quant_resi.N.*`) Phi
    layouts -> the partially shared `quant_resi.qresi_ls.N.*` one this code has (same selection rule)."""
    def rename(k: str) -> str:
        k = re.sub(r"^quantize\.quant_resi\.qresi\.", "quantize.quant_resi.qresi_ls.0.", k)
        return re.sub(r"^quantize\.quant_resi\.(\d+)\.", r"quantize.quant_resi.qresi_ls.\1.", k)
    return {rename(k): v for k, v in sd.items()}


def _complete_var_state(sd: dict, var: VAR, path) -> dict:
    """Fill the buffers a file may lack (older files) from the scales, and check the ones it has:
    `lvl_1L` and `attn_bias_for_masking` must be what the scale widths give. A file's
    `zero_k_bias` is kept as it is (FoundationVision's attention adds it to the keys)."""
    sd = dict(sd)
    derived = {"lvl_1L": level_index(var.patch_nums), "attn_bias_for_masking": block_causal_bias(var.patch_nums)}
    for key, want in derived.items():
        if key not in sd:
            sd[key] = want
        elif sd[key].shape == want.shape and not torch.equal(sd[key].to(want.dtype), want):
            raise UserError(f"{path}: buffer {key} does not match the scales {var.patch_nums} "
                            f"(expected the block-causal layout FoundationVision's code builds)")
    for i in range(len(var.blocks)):
        sd.setdefault(f"blocks.{i}.attn.zero_k_bias", torch.zeros(var.C))
    return sd


def _complete_vae_state(sd: dict, vqvae: VQVAE) -> dict:
    """`quantize.ema_vocab_hit_SV` (training statistics, one row per scale of the tokenizer's
    training) is taken from the model when absent or when its scale count differs, as
    FoundationVision's own `VQVAE.load_state_dict` does."""
    sd = dict(sd)
    key = "quantize.ema_vocab_hit_SV"
    own = vqvae.quantize.ema_vocab_hit_SV
    if key not in sd or (sd[key].ndim == 2 and sd[key].shape[0] != own.shape[0] and sd[key].shape[1] == own.shape[1]):
        sd[key] = own.clone()
    return sd


def _count(sd: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _need(sd: dict, key: str, path) -> torch.Tensor:
    if key not in sd:
        raise UserError(f"{path}: key {key!r} is missing; not a FoundationVision VAR/VQVAE layout this code supports")
    return sd[key]


def infer_vqvae_config(sd: dict, path, base: VQVAEConfig | None = None) -> VQVAEConfig:
    """Tokenizer sizes read off a `vae_*.pth` state dict (GroupNorm groups, the Phi residual ratio
    and the loss weight are not in the tensors: they come from `base`, FoundationVision's 32, 0.5
    and 0.25 by default)."""
    base = base or VQVAEConfig()
    sd = _rename_vae_keys(sd)
    ch, in_ch = _need(sd, "encoder.conv_in.weight", path).shape[:2]
    levels = _count(sd, "encoder.down.")
    ch_mult = tuple(int(_need(sd, f"encoder.down.{i}.block.0.conv1.weight", path).shape[0]) // ch for i in range(levels))
    phis = _count(sd, "quantize.quant_resi.qresi_ls.")
    if phis == 0:
        raise UserError(f"{path}: no quantize.quant_resi convs (a tokenizer built with quant_resi=0 is not supported)")
    return VQVAEConfig(
        in_channels=int(in_ch), ch=int(ch), ch_mult=ch_mult,
        num_res_blocks=_count(sd, "encoder.down.0.block."),
        z_channels=int(_need(sd, "quant_conv.weight", path).shape[0]),
        vocab_size=int(_need(sd, "quantize.embedding.weight", path).shape[0]),
        num_groups=base.num_groups,
        using_sa=f"encoder.down.{levels - 1}.attn.0.qkv.weight" in sd,
        using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd,
        beta=base.beta, quant_resi=base.quant_resi,
        share_quant_resi=phis,
    )


def infer_var_config(sd: dict, path, base: VARConfig | None = None) -> VARConfig:
    """Transformer sizes read off a `var_d*.pth` state dict; scale widths from its level buffer.

    Heads come from the per-head attention scale (`scale_mul_1H11`, present with cosine
    attention, as in every released model); without it, from FoundationVision's builder rule
    (width = 64 x depth, heads = depth) when the width fits it, else from `base`."""
    base = base or VARConfig()
    sd = _rename_var_keys(sd)
    n_cls, C = (int(n) for n in _need(sd, "class_emb.weight", path).shape)
    L = int(_need(sd, "pos_1LC", path).shape[1])
    depth = _count(sd, "blocks.")
    if "lvl_1L" in sd:
        lvl = sd["lvl_1L"].flatten().long()
        counts = torch.bincount(lvl).tolist()
        patch_nums = tuple(math.isqrt(c) for c in counts)
        if any(p * p != c for p, c in zip(patch_nums, counts)) or not torch.equal(lvl.view(1, -1), level_index(patch_nums)):
            raise UserError(f"{path}: lvl_1L is not a run of square token maps, one scale after another")
    elif L == sum(p * p for p in base.patch_nums):
        patch_nums = tuple(base.patch_nums)
    else:
        raise UserError(f"{path}: {L} tokens per image but no lvl_1L buffer to read the scale widths from")
    if sum(p * p for p in patch_nums) != L:
        raise UserError(f"{path}: lvl_1L covers {sum(p * p for p in patch_nums)} tokens but pos_1LC has {L}")
    if "blocks.0.attn.scale_mul_1H11" in sd:
        heads, l2 = int(sd["blocks.0.attn.scale_mul_1H11"].shape[1]), True
    else:
        heads, l2 = (depth if C == 64 * depth else base.num_heads), False
    if C % heads:
        raise UserError(f"{path}: width {C} is not a multiple of {heads} heads")
    return VARConfig(
        depth=depth, embed_dim=C, num_heads=heads,
        mlp_ratio=int(_need(sd, "blocks.0.ffn.fc1.weight", path).shape[0]) / C,
        patch_nums=patch_nums, num_classes=n_cls - 1, cond="class", attn_l2_norm=l2,
        norm_eps=base.norm_eps, class_names=base.class_names,
    )


def _load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], path) -> None:
    """Load every tensor or raise one line naming missing / unexpected / mis-shaped keys, and
    refuse weights no trained model has (NaN, inf, or uninitialised-memory magnitudes)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and sd[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise UserError(f"{path}: does not match the {type(module).__name__} architecture: " + "; ".join(problems))
    params = {name for name, _ in module.named_parameters()}
    bad = [k for k in expected if k in params and sd[k].is_floating_point()
           and not bool((sd[k].float().abs() < _GARBAGE_ABS).all())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise UserError(f"{path}: {len(bad)} {type(module).__name__} weight tensors hold NaN/inf or values of "
                        f"{_GARBAGE_ABS:g} and more, i.e. uninitialised memory: {', '.join(bad[:3])}{more}. "
                        "FoundationVision's build_vae_var() leaves the tokenizer's convolutions uninitialised "
                        "(it expects vae_ch160v4096z32.pth to be loaded into it); save a trained or initialised model")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True)


def load_foundation_vision_vqvae(vae_path: str | Path, patch_nums: tuple[int, ...] = VAR_PATCH_NUMS,
                                 base: VQVAEConfig | None = None) -> tuple[VQVAEConfig, VQVAE]:
    """A FoundationVision `vae_*.pth` on its own, quantising at `patch_nums` (VAR-256's by default)."""
    sd = _rename_vae_keys(_read_state_dict(vae_path, "VQVAE tokenizer"))
    cfg = infer_vqvae_config(sd, vae_path, base)
    vqvae = VQVAE(cfg, tuple(patch_nums))
    _load_strict(vqvae, _complete_vae_state(sd, vqvae), vae_path)
    return cfg, vqvae.eval()


def load_foundation_vision(var_path: str | Path, vae_path: str | Path, device: str | torch.device = "cpu",
                           base: VarModelConfig | None = None, name: str | None = None) -> VarPipeline:
    """FoundationVision `var_d*.pth` + `vae_*.pth` into this package's architecture."""
    base = base or VarModelConfig(name="var")
    sd_var = _rename_var_keys(_read_state_dict(var_path, "VAR transformer"))
    sd_vae = _rename_vae_keys(_read_state_dict(vae_path, "VQVAE tokenizer"))
    var_cfg = infer_var_config(sd_var, var_path, base.var)
    vq_cfg = infer_vqvae_config(sd_vae, vae_path, base.vqvae)
    if "attn_bias_for_masking" in sd_var and sd_var["attn_bias_for_masking"].shape[-1] != var_cfg.seq_len:
        raise UserError(f"{var_path}: attn_bias_for_masking covers {sd_var['attn_bias_for_masking'].shape[-1]} "
                        f"tokens but the scales {var_cfg.patch_nums} give {var_cfg.seq_len}")
    Cvae = int(_need(sd_var, "word_embed.weight", var_path).shape[1])
    V = int(_need(sd_var, "head.weight", var_path).shape[0])
    if (Cvae, V) != (vq_cfg.z_channels, vq_cfg.vocab_size):
        raise UserError(f"{var_path} and {vae_path} do not belong together: the transformer expects codes of width "
                        f"{Cvae} from a {V}-entry codebook, the tokenizer has {vq_cfg.z_channels} and {vq_cfg.vocab_size}")
    config = VarModelConfig(name=name or Path(var_path).stem, vqvae=vq_cfg, var=var_cfg, sampling=base.sampling)
    vqvae, var = build_models(config)
    _load_strict(vqvae, _complete_vae_state(sd_vae, vqvae), vae_path)
    _load_strict(var, _complete_var_state(sd_var, var, var_path), var_path)
    return VarPipeline(config, vqvae.to(device), var.to(device))


def foundation_vision_state_dicts(pipeline: VarPipeline) -> tuple[dict, dict]:
    """(var, vae) state dicts in FoundationVision's layout (this package's modules have it), for export."""
    return dict(pipeline.var.state_dict()), dict(pipeline.vqvae.state_dict())
