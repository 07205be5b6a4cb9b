"""`import ecad_ray` stays light, and the torchvision patch still lands before model imports."""

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_importing_the_library_does_not_import_torch():
    assert _run("import sys, ecad_ray, actors.writer; print('torch' in sys.modules)") == "False"


def test_transformers_models_import_after_the_lazy_patch():
    out = _run(
        "import sys, ecad_ray\n"
        "from transformers import T5EncoderModel\n"
        "from diffusers import PixArtTransformer2DModel\n"
        "from ecad_ray import _compat\n"
        "print(not any(isinstance(f, _compat._PatchBeforeTorchvision) for f in sys.meta_path))"
    )
    assert out.endswith("True")  # the hook ran (and removed itself) on the first torchvision lookup
