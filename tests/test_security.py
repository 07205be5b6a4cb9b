"""No open doors: a local Ray on loopback with token auth on, no pickle anywhere, ids that stay put.

Pickles run code when loaded, so every reader of weights, embeddings and checkpoints is
weights-only (torch), `allow_pickle=False` (numpy) or safetensors; the scan below keeps it so,
and the behavioural tests feed each reader a file that would run code.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ecad_ray.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, os, psutil
from actors.plan import ray_session
from ray._private.authentication.authentication_utils import is_token_auth_enabled

with ray_session(None, 2):
    import ray
    ray.get(ray.remote(lambda: 1).remote())  # a worker process too, not only GCS and raylet
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = [c.laddr.ip for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    print(json.dumps({"listening": listening, "token_auth": is_token_auth_enabled(),
                      "processes": len(pids)}))
"""


def test_a_local_run_listens_on_loopback_only_with_token_auth_on():
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["token_auth"] is True
    assert probe["processes"] >= 3 and len(probe["listening"]) >= 3  # GCS, raylet, worker at least
    exposed = [ip for ip in probe["listening"] if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]
    assert exposed == [], f"Ray ports bound beyond loopback: {exposed}"


def test_nothing_in_the_project_switches_ray_auth_off():
    """Scripts, docs, configs and code never set RAY_AUTH_MODE=disabled for the user."""
    offenders = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or path.suffix not in {".py", ".sh", ".md", ".yaml", ".yml", ".toml", ".txt"}:
            continue
        if any(part.startswith(".") or part in {"runs", "build"} for part in path.relative_to(ROOT).parts):
            continue
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        if "RAY_AUTH_MODE" in text and "disabled" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _project_sources() -> list[Path]:
    return [p for folder in ("ecad_ray", "actors", "ecad_ray_cli", "benchmarks") for p in (ROOT / folder).rglob("*.py")]


def _calls(tree: ast.AST, dotted: str):
    """Every call of `dotted` (e.g. `torch.load`) in `tree`."""
    owner, name = dotted.rsplit(".", 1)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name
                and isinstance(node.func.value, ast.Name) and node.func.value.id == owner):
            yield node


def _keyword(call: ast.Call, name: str):
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


def test_no_reader_in_the_project_can_unpickle():
    sources = _project_sources()
    assert len(sources) > 50
    unsafe = []
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                unsafe += [f"{where}: imports {n}" for n in names if n in {"pickle", "dill", "cPickle", "joblib"}]
        unsafe += [f"{where}:{c.lineno}: torch.load without weights_only=True" for c in _calls(tree, "torch.load")
                   if _keyword(c, "weights_only") is not True]
        unsafe += [f"{where}:{c.lineno}: np.load(allow_pickle=True)" for c in _calls(tree, "np.load")
                   if _keyword(c, "allow_pickle") not in (None, False)]
        unsafe += [f"{where}:{c.lineno}: yaml.load (use yaml.safe_load)" for c in _calls(tree, "yaml.load")]
    assert unsafe == []


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("reader", ["transformer weights", "var checkpoint"])
def test_weight_readers_refuse_a_file_that_would_run_code(tmp_path, reader):
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode()}, evil)
    if reader == "transformer weights":
        from ecad_ray.models.loading import load_transformer_file
        from ecad_ray.models.registry import resolve_model
        from dataclasses import replace

        model_spec = replace(resolve_model("demo"), transformer_file=str(evil))
        with pytest.raises(UserError, match=f"^--transformer-weights {evil}: cannot read weights"):
            load_transformer_file(torch.nn.Linear(2, 2), model_spec)
    else:
        from ecad_ray.var.checkpoints import _read_state_dict

        with pytest.raises(UserError, match=f"^{evil}: cannot read as a torch state dict"):
            _read_state_dict(evil, "VAR")


@pytest.mark.parametrize("prompt_id", ["../../etc/passwd", "..", "/abs/path", "a\\..\\b", "x/../../y", "\x00nul", "."])
def test_prompt_ids_never_leave_the_images_folder(tmp_path, prompt_id):
    from ecad_ray.records import image_name

    images = (tmp_path / "run" / "images").resolve()
    path = (images / image_name(3, prompt_id, 0)).resolve()
    assert path.parent == images and "/" not in image_name(3, prompt_id, 0) and "\x00" not in path.name
