"""Prompt vectors for text-conditional VARs: the demo's T5, any transformers encoder in a folder,
the hashed bag of words; one-line errors for missing or mismatched encoders."""

import pytest
import torch

from ecad_ray.errors import UserError
from ecad_ray.var.checkpoints import build_models
from ecad_ray.var.config import VARConfig, tiny_config
from ecad_ray.var.generation import VarPipeline
from ecad_ray.var.text import load_prompt_encoder
from tiny_models import tiny_clip_tokenizer


def test_demo_encoder_keeps_which_colour_goes_with_which_shape():
    enc = load_prompt_encoder("demo", 16 * 128, "tokens", 16)
    a, b, a_again = enc(["a red circle above a blue square", "a blue circle above a red square",
                         "a red circle above a blue square"])
    assert a.shape == (16 * 128,) and torch.equal(a, a_again)
    assert (a - b).abs().max() > 1e-2  # same words, other binding: another condition
    mean = load_prompt_encoder("demo", 128, "mean", 16)
    assert mean(["a red circle"]).shape == (1, 128)


def test_vectors_do_not_depend_on_the_batch():
    enc = load_prompt_encoder("demo", 16 * 128, "tokens", 16)
    alone = enc(["a small green cross"])
    together = enc(["a large yellow triangle left of a white circle", "a small green cross"])
    assert torch.allclose(alone[0], together[1], atol=1e-6)


def _clip_text_folder(folder):
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_any_transformers_encoder_in_a_folder_conditions_a_var(tmp_path):
    folder = _clip_text_folder(tmp_path / "clip")
    enc = load_prompt_encoder(str(folder), 24, "mean", 8)
    v = enc(["a cat", "a dog"])
    assert v.shape == (2, 24) and (v[0] - v[1]).abs().max() > 0
    cfg = tiny_config()
    cfg = cfg.__class__(name="tiny-text", vqvae=cfg.vqvae, sampling=cfg.sampling,
                        var=VARConfig(**{**cfg.var.__dict__, "cond": "text", "text_encoder": str(folder),
                                         "text_dim": 24, "text_tokens": 8}))
    pipe = VarPipeline(cfg, *build_models(cfg))
    cond = pipe.conditions(prompts=["a cat", "a dog"])
    out = pipe.generate(cond, [0, 1])
    assert out.images_B3HW.shape == (2, 3, 8, 8)
    assert not torch.equal(out.images_B3HW, pipe.generate(pipe.conditions(prompts=["a dog", "a dog"]), [0, 1]).images_B3HW)


def test_missing_or_mismatched_encoders_are_named(tmp_path):
    with pytest.raises(UserError, match=r"text encoder 'nobody/no-such-encoder': cannot load this hub id"):
        load_prompt_encoder("nobody/no-such-encoder", 32)
    with pytest.raises(UserError, match="gives 128-wide vectors but the model's text_dim is 64"):
        load_prompt_encoder("demo", 64, "mean", 16)
    with pytest.raises(UserError, match="text pooling 'max'"):
        load_prompt_encoder("demo", 128, "max", 16)
    assert load_prompt_encoder("hash", 32)(["a b"]).shape == (1, 32)
