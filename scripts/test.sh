#!/usr/bin/env bash
# Set up (first run only) and run the CPU test suite; GPU and slow tests are deselected by marker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
.venv/bin/python -m pytest -q "$@"
