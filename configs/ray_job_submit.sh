#!/usr/bin/env bash
# Submit one `ecad-ray generate` run to a running Ray cluster as a Ray Job, and wait for it:
#
#   RAY_ADDRESS=http://127.0.0.1:8265 OUTPUT_DIR=/mnt/runs/run1 NUM_WORKERS=2 bash configs/ray_job_submit.sh [more generate options]
#
# which runs
#
#   ray job submit --address "$RAY_ADDRESS" --working-dir . -- ecad-ray generate --model pixart-alpha-256 \
#       --prompt-file prompts/demo.txt --output-dir /mnt/runs/run1 --num-workers 2 [more generate options]
#
# - RAY_ADDRESS: the head's dashboard (port 8265). Cluster launcher: `ray dashboard configs/cluster.yaml`
#   forwards it to 127.0.0.1:8265; KubeRay: `kubectl port-forward svc/<cluster>-head-svc 8265:8265`.
# - The working directory (WORKING_DIR, default: the current one, e.g. the repository root) is
#   uploaded and the entrypoint runs inside a copy of it on the head node, so relative paths such
#   as prompts/ and schedules/ resolve there (files ignored by .gitignore are left out).
# - OUTPUT_DIR is a path on the cluster, not here: the driver runs on the head node, and the
#   embeddings store under it is written and read by actors on any node, so it must be on
#   storage every node mounts at the same path (the ecad-ray-runs volume on KubeRay).
# - The cluster needs ecad-ray and its dependencies installed on every node (the image, or the
#   launcher's setup_commands); `ray job submit` needs ray[default] here.
# - Token auth: Ray sends the token when RAY_AUTH_MODE=token, reading it from RAY_AUTH_TOKEN, the
#   file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (in that order). KubeRay: export
#   RAY_AUTH_TOKEN from the cluster's Secret (configs/kuberay/raycluster.yaml says how); cluster
#   launcher: the token in ~/.ray/auth_token is the one configs/cluster.yaml copies to the nodes.
set -euo pipefail

RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
MODEL="${MODEL:-pixart-alpha-256}"
PROMPT_FILE="${PROMPT_FILE:-prompts/demo.txt}"
OUTPUT_DIR="${OUTPUT_DIR:?set OUTPUT_DIR to a run folder on storage every Ray node mounts, e.g. /mnt/runs/run1}"
NUM_WORKERS="${NUM_WORKERS:-1}"      # = GPUs in the cluster
WORKING_DIR="${WORKING_DIR:-.}"

exec ray job submit --address "$RAY_ADDRESS" --working-dir "$WORKING_DIR" -- \
    ecad-ray generate --model "$MODEL" --prompt-file "$PROMPT_FILE" --output-dir "$OUTPUT_DIR" \
    --num-workers "$NUM_WORKERS" "$@"
