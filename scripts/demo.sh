#!/usr/bin/env bash
# Set up (first run only) and generate images from the demo prompts on the built-in demo model, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/ecad-ray generate --model demo --prompt-file prompts/demo.txt --output-dir runs/demo "$@"
