"""Fixtures of the `dataset` tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_prompts import write_prompts


@pytest.fixture
def shapes_prompts(tmp_path) -> Path:
    from ecad_ray.dataset.classes import load_class_set

    return write_prompts(tmp_path / "prompts.json", load_class_set("shapes").classes)
