"""CLIP score: how well an image matches its prompt, with transformers' CLIP.

Score = 100 * max(cos(image embedding, text embedding), 0), the usual definition (as in
torchmetrics and ECAD's ViT-B/32 numbers). The model is a hub id (default
`openai/clip-vit-base-patch32`) or a local `save_pretrained` folder; missing weights are a
`UserError` naming the id and how to supply it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ecad_ray.errors import UserError


class ClipScorer:
    """Scores (image, prompt) pairs with one CLIP model held on `device`."""

    def __init__(self, model: str, device: str | torch.device = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.device = torch.device(device)
        try:
            self.processor = CLIPProcessor.from_pretrained(model)
            self.model = CLIPModel.from_pretrained(model)
        except (OSError, ValueError) as err:
            raise UserError(_missing_message(model, err)) from err
        self.model.eval().to(self.device)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def __call__(self, images_BHWC: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """CLIP score per pair, float64 of shape (B,)."""
        inputs = self.processor(
            text=list(prompts),
            images=list(np.array(images_BHWC, dtype=np.uint8)),  # writable copies for torch
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
        ).to(self.device)
        img_BD = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        txt_BD = self.model.get_text_features(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        img_BD = _as_tensor(img_BD)
        txt_BD = _as_tensor(txt_BD)
        cos_B = torch.nn.functional.cosine_similarity(img_BD, txt_BD, dim=-1)
        return (100.0 * cos_B.clamp(min=0)).double().cpu().numpy()


def _as_tensor(features) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor: take the pooled embeds."""
    if isinstance(features, torch.Tensor):
        return features
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(features, name, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected CLIP feature output {type(features).__name__}")


def _missing_message(model: str, err: Exception) -> str:
    """One line naming the CLIP model that failed to load and how to supply it."""
    if model.startswith((".", "/", "~")) or "\\" in model:
        return (
            f"clip: --clip-model {model}: not a CLIP save_pretrained folder ({type(err).__name__}); "
            "it needs config.json, the weights and the processor/tokenizer files"
        )
    return (
        f"clip: cannot load CLIP model {model} ({type(err).__name__}): not in the Hugging Face "
        "cache and the hub cannot be reached. Download it where there is network "
        f"(`huggingface-cli download {model}`) and pass --clip-model with that folder, "
        "or copy the cache (HF_HOME)"
    )
