#!/usr/bin/env bash
# Create .venv and install ecad-ray with its metrics and dev extras; safe to re-run.
# On a machine without an NVIDIA GPU torch is pinned to the local CPU build (2.13.0): an
# unpinned torch, or clean-fid/lpips resolving it later, would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.ecad-ray-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints-cpu.txt -nt "$stamp" ]; then
  echo "Installing ecad-ray and its dependencies into .venv (first run only; log: .venv/install.log)"
  constraint=()
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    constraint=(-c constraints-cpu.txt torch==2.13.0)
  fi
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q "${constraint[@]}" -e ".[metrics,dev]"; } >.venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    echo "error: installing ecad-ray failed; full log in .venv/install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
