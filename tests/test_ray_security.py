"""No open doors: a local Ray started for a run binds to loopback only, with token auth on."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

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
