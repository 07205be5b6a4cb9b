#!/usr/bin/env bash
# The prepared GPU check: one call of the device tool, from the repository root, runs
#   the gpu-marked tests, then every benchmark's GPU mode, and writes the figures to
#   $OUT/gpu_figures.txt (full log: $OUT/gpu_check.log). docs/benchmarks.md, "GPU check", has the call.
#
# Before it, here: bash benchmarks/gpu_wheels.sh (fills the ignored folder .whl/), and carry ".whl".
# There nothing can be fetched: the wheels are installed with --no-index --no-deps into /tmp/site,
# the project runs from the tree (PYTHONPATH), and torch is the image's own CUDA build
# (constraints-cpu.txt and scripts/setup.sh are never used there).
#
# Steps, in order (each with its own time limit; all together stop by GPU_CHECK_BUDGET_S, 530 s):
#   setup       install .whl/ into /tmp/site (skipped when a warm machine already has it)
#   env         python / torch / CUDA / diffusers / ray versions and where each is imported from
#   tests       pytest -m gpu on the test files that need no Ray
#   speedup     cache_speedup.py, PixArt-XL-2 size (28 blocks, 16 x 72, caption 4096), fp16, 16 images
#   var         var_pruning.py, random VAR-d16 on CUDA, batch 16: pruning speedup vs the FLOPs ideal
#   memory      cache_memory.py (analytic, no GPU mode: the figures the measured cache peak is checked by)
#   image-*     `ecad-ray image` on a random-weight PixArt-alpha-256 pipeline (full transformer, T5-XXL
#               width with GPU_CHECK_T5_LAYERS layers, SD VAE): fp16, bf16, fp16 --offload peak memory
#   tests-ray   pytest -m gpu on the test files that use Ray (skipped when Ray was not carried)
#   image-ecad  the fp16 image run again with ECAD's ours_fast schedule (measured cache peak)
#   infinity    var_pruning.py --model infinity-2b: random Infinity-2B size at 1024 px, bf16, batch 1,
#               unpruned vs FastVAR's setting: measured transformer speedup vs the FLOPs ideal
# A failing or timed-out step is reported in capitals at once and the next step still runs (but
# none after a failed setup or env); the script exits 1 at the end if any step failed or did not run. Rerun some steps on a warm machine:
#   GPU_CHECK_STEPS="var image-build image-fp16" bash benchmarks/gpu_check.sh
# GPU_CHECK_SMOKE=1 runs the same steps on the CPU with tiny sizes and the local .venv (checks the
# script itself; no figures worth keeping).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SELF=$ROOT/benchmarks/gpu_check.sh
ALL_STEPS="setup env tests speedup var memory image-build image-fp16 image-bf16 image-offload tests-ray image-ecad infinity"

export GPU_CHECK_SMOKE=${GPU_CHECK_SMOKE:-0}
export OUT=${OUT:-$ROOT/runs/gpu_check}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 RAY_USAGE_STATS_ENABLED=0  # nothing can be reached there
export SITE=${GPU_CHECK_SITE:-/tmp/site}
export IMG_DIR=${GPU_CHECK_IMAGE_MODEL:-/tmp/gpu_check_pixart}
export T5_LAYERS=${GPU_CHECK_T5_LAYERS:-24}
if [ "$GPU_CHECK_SMOKE" = 1 ]; then
  export PY=${PYTHON:-$ROOT/.venv/bin/python} DEVICE=cpu OMP_NUM_THREADS=1
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
else
  export PY=${PYTHON:-python3} DEVICE=cuda
  export PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

# ---- the steps (each runs as `gpu_check.sh --step NAME`, under `timeout`) ---------------------

step_setup() {
  if [ "$GPU_CHECK_SMOKE" = 1 ]; then
    echo "smoke run: using $PY as it is (nothing installed)"
    return
  fi
  compgen -G ".whl/*.whl" >/dev/null || {
    echo "error: no wheels in .whl/: run 'bash benchmarks/gpu_wheels.sh' here and pass carry [\".whl\"]" >&2
    exit 1
  }
  local stamp=$SITE/.ecad-ray-gpu-check sig
  sig=$(cd .whl && stat -c '%n %s' -- *)  # names and sizes: the tree is copied anew each call
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sig" ]; then
    echo "$SITE already holds these wheels (warm machine)"
    return
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  local tarball
  for tarball in .whl/ray-*-slim.tar.xz; do
    [ -e "$tarball" ] || continue
    "$PY" -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' "$tarball" "$SITE"
  done
  echo "$sig" > "$stamp"
  ls "$SITE"
}

step_env() {
  "$PY" - <<'EOF'
import importlib, os, platform, sys

import ecad_ray  # noqa: F401  (its torchvision shim first, as every entry point does)
import torch

print(f"python {platform.python_version()} ({sys.executable}); {os.cpu_count()} CPU cores")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) from {os.path.dirname(torch.__file__)}")
for name in ("diffusers", "transformers", "accelerate", "safetensors", "pyarrow", "typer", "cleanfid", "lpips", "ray"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')} from {os.path.dirname(mod.__file__)}")
    except Exception as err:  # noqa: BLE001  (report every missing piece, fail below on the needed ones)
        print(f"{name}: NOT IMPORTABLE ({type(err).__name__}: {err})")
site = os.environ["SITE"]
if torch.__file__.startswith(site):
    sys.exit(f"error: torch was imported from {site}: a carried wheel replaced the image's CUDA torch")
if os.environ["DEVICE"] == "cuda":
    if not torch.cuda.is_available() or torch.version.cuda is None:
        sys.exit("error: torch sees no CUDA GPU")
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"compute capability {p.major}.{p.minor}")
import diffusers  # noqa: E402,F401  (the benchmarks need it; fail here, loudly, if it is missing)
EOF
}

gpu_test_files() {  # $1 = ray | noray: the test files with gpu-marked tests that do / do not use Ray
  local f
  for f in $(grep -rl "mark.gpu" tests --include="test_*.py"); do
    if grep -qE "^(from actors|import actors|import ray|from ray)|ray_local" "$f"; then
      [ "$1" = ray ] && echo "$f"
    else
      [ "$1" = noray ] && echo "$f"
    fi
  done
  return 0
}

step_tests() {
  local files
  files=$(gpu_test_files noray)
  [ -n "$files" ] || { echo "error: no gpu-marked test files found" >&2; exit 1; }
  # shellcheck disable=SC2086
  "$PY" -m pytest -q -m gpu -rA -p no:cacheprovider $files
}

step_tests_ray() {
  local files rc=0
  files=$(gpu_test_files ray)
  [ -n "$files" ] || { echo "no gpu-marked test file uses Ray"; return; }
  # shellcheck disable=SC2086
  "$PY" -m pytest -q -m gpu -rA -p no:cacheprovider $files || rc=$?
  timeout 30 "$PY" -m ray.scripts.scripts stop --force >/dev/null 2>&1 || true
  return "$rc"
}

step_speedup() {
  if [ "$GPU_CHECK_SMOKE" = 1 ]; then
    "$PY" benchmarks/cache_speedup.py --device cpu --dtype fp32 --blocks 2 --heads 2 --head-dim 16 \
      --caption-channels 32 --images 1 --steps 4 --repeats 1
  else
    "$PY" benchmarks/cache_speedup.py --device cuda --dtype fp16 --blocks 28 --heads 16 --head-dim 72 \
      --caption-channels 4096 --images 16 --steps 20 --repeats 3
  fi
}

step_var() {
  if [ "$GPU_CHECK_SMOKE" = 1 ]; then
    "$PY" benchmarks/var_pruning.py --device cpu --speed-model random:tiny --batch 2 --repeats 1 \
      --quality-images 2 --threads 1
  else
    "$PY" benchmarks/var_pruning.py --device cuda --speed-model random:var-d16 --batch 16 --repeats 3 \
      --quality-images 20 --threads 8
  fi
}

step_infinity() {
  if [ "$GPU_CHECK_SMOKE" = 1 ]; then
    "$PY" benchmarks/var_pruning.py --model infinity-tiny --device cpu --batch 1 --repeats 1
  else
    "$PY" benchmarks/var_pruning.py --model infinity-2b --device cuda --batch 1 --repeats 3
  fi
}

step_memory() {
  "$PY" benchmarks/cache_memory.py
}

step_image_build() {  # a random-weight PixArt-alpha-256 pipeline, saved as a save_pretrained folder
  rm -rf "$IMG_DIR"
  "$PY" - "$IMG_DIR" "$T5_LAYERS" "$GPU_CHECK_SMOKE" <<'EOF'
import json
import os
import sys
import time
from pathlib import Path

import ecad_ray  # noqa: F401  (torchvision shim before diffusers / transformers)
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

out, t5_layers, smoke = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
began = time.perf_counter()
cfg = json.loads(Path("ecad_ray/caching/model_configs/pixart-alpha-256.json").read_text())["transformer"]
cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}  # PixArt-XL-2-256x256 as shipped
t5 = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_heads=64,  # T5 v1.1 XXL widths
          relative_attention_num_buckets=32, feed_forward_proj="gated-gelu")
vae = dict(block_out_channels=(128, 256, 512, 512), norm_num_groups=32)  # the SD VAE PixArt uses
if smoke:
    cfg.update(num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32, caption_channels=32)
    t5.update(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_heads=4, relative_attention_num_buckets=8)
    vae.update(block_out_channels=(8, 8, 8, 8), norm_num_groups=4)
words = ["a", "an", "the", "red", "blue", "green", "cat", "dog", "photo", "of", "on", "grass"]
pieces = ["<pad>", "</s>", "<unk>"] + [f"\u2581{w}" for w in words]
tokenizer = T5Tokenizer(vocab=[(p, -float(i)) for i, p in enumerate(pieces)], extra_ids=0, model_max_length=120)


def build(device):
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        return (PixArtTransformer2DModel.from_config(cfg),
                T5EncoderModel(T5Config(num_layers=t5_layers, pad_token_id=0, eos_token_id=1, **t5)),
                AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=256,
                              scaling_factor=0.18215, down_block_types=("DownEncoderBlock2D",) * 4,
                              up_block_types=("UpDecoderBlock2D",) * 4, **vae))


try:
    parts = build("cuda" if torch.cuda.is_available() else "cpu")
except Exception as err:  # noqa: BLE001
    print(f"warning: building on the GPU failed ({type(err).__name__}: {err}); building on the CPU", flush=True)
    torch.set_num_threads(os.cpu_count())
    parts = build("cpu")
dtype = torch.float32 if smoke else torch.float16
parts = [m.to(dtype).to("cpu").eval() for m in parts]
transformer, text_encoder, vae_model = parts
pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae_model, transformer=transformer,
                           scheduler=DPMSolverMultistepScheduler())
built = time.perf_counter() - began
pipe.save_pretrained(out)
size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
count = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in
         (("transformer", transformer), ("text encoder", text_encoder), ("VAE", vae_model))}
print("random-weight PixArt-alpha-256 pipeline: " + ", ".join(f"{k} {v:,.1f}M params" for k, v in count.items())
      + f" (T5 {t5_layers} layers of d_model {t5['d_model']}); {str(dtype)[6:]} weights, {size / 2**30:.2f} GiB "
      f"on disk; built in {built:.1f} s, saved in {time.perf_counter() - began - built:.1f} s -> {out}")
EOF
}

image_run() {  # extra `ecad-ray image` options
  [ -f "$IMG_DIR/model_index.json" ] || { echo "error: no model at $IMG_DIR (step image-build failed?)" >&2; exit 1; }
  local dtype=fp16
  [ "$GPU_CHECK_SMOKE" = 1 ] && dtype=fp32
  "$PY" -m ecad_ray_cli image --model "$IMG_DIR" --prompt "a photo of a red cat on the grass" --steps 20 --cfg 4.5 \
    --size 256x256 --seed 0 --dtype "$dtype" --out "/tmp/gpu_check_$1.png" "${@:2}"
}
step_image_fp16() { image_run fp16; }
step_image_bf16() { image_run bf16 --dtype bf16; }
step_image_offload() { image_run offload --offload; }
step_image_ecad() { image_run ecad --schedule schedules/schedules_in_paper/pixart_alpha_256/ours_fast.json; }

if [ "${1:-}" = "--step" ]; then
  "step_${2//-/_}"
  exit
fi

# ---- the driver -------------------------------------------------------------------------------

budget_for() {  # each step's limit in seconds (the global deadline may cut it shorter)
  case $1 in
    setup) echo 90 ;; env) echo 60 ;; tests) echo 150 ;; speedup) echo 150 ;; var) echo 150 ;;
    memory) echo 45 ;; infinity) echo 150 ;; image-build) echo 150 ;; image-*) echo 90 ;; tests-ray) echo 180 ;; *) echo 60 ;;
  esac
}
in_figures() {  # steps whose printed output belongs in gpu_figures.txt
  case $1 in setup) return 1 ;; *) return 0 ;; esac
}

main() {
  local started=$SECONDS deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-530}))
  local steps=${GPU_CHECK_STEPS:-$ALL_STEPS} name limit left rc t0 secs status
  local stop="the check's ${GPU_CHECK_BUDGET_S:-530} s are spent"
  local -a summary=() failed=()
  FIG=$OUT/gpu_figures.txt
  {
    if [ "$GPU_CHECK_SMOKE" = 1 ]; then
      echo "(smoke run on the CPU, tiny sizes: not figures)"
    else
      nvidia-smi --query-gpu=name,memory.total --format=csv || echo "nvidia-smi FAILED"
    fi
    echo
    echo "ecad-ray GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "steps: $steps"
  } > "$FIG"
  cat "$FIG"
  for name in $steps; do
    case " $ALL_STEPS " in *" $name "*) ;; *) echo "error: unknown step $name (steps: $ALL_STEPS)" >&2; exit 2 ;; esac
    limit=$(budget_for "$name")
    left=$((deadline - SECONDS - 5))
    if [ "$name" = tests-ray ] && [ "$GPU_CHECK_SMOKE" != 1 ] && ! ls .whl/ray-*-slim.tar.xz >/dev/null 2>&1 \
        && ! "$PY" -c "import ray" >/dev/null 2>&1; then
      echo "=== $name: skipped, Ray was not carried (benchmarks/gpu_wheels.sh --no-ray)" | tee -a "$FIG"
      summary+=("$(printf '%-14s %-10s %6s %6s' "$name" skipped - -)")
      continue
    fi
    if [ "$left" -lt 20 ]; then
      echo "########## NOT RUN: $name ($stop) ##########" | tee -a "$FIG"
      summary+=("$(printf '%-14s %-10s %6s %6s' "$name" "NOT RUN" - -)")
      failed+=("$name")
      continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo
    echo "=== $name (limit $limit s, $((SECONDS - started)) s into the check)"
    in_figures "$name" && printf '\n=== %s\n' "$name" >> "$FIG"
    t0=$SECONDS
    set +e
    if in_figures "$name"; then
      timeout -k 10 "$limit" bash "$SELF" --step "$name" | tee -a "$FIG"
      rc=${PIPESTATUS[0]}
    else
      timeout -k 10 "$limit" bash "$SELF" --step "$name"
      rc=$?
    fi
    set -e
    secs=$((SECONDS - t0))
    if [ "$rc" = 0 ]; then
      status=ok
    else
      status=FAILED
      failed+=("$name")
      [ "$rc" = 124 ] || [ "$rc" = 137 ] && status=TIMEOUT
      echo "########## $status: $name (exit $rc after $secs s, limit $limit s) ##########" | tee -a "$FIG" >&2
      case $name in setup | env) deadline=0 stop="$name failed" ;; esac  # every later step needs them
    fi
    in_figures "$name" && echo "--- $name: $status in $secs s (limit $limit s)" >> "$FIG"
    summary+=("$(printf '%-14s %-10s %6s %6s' "$name" "$status" "$secs" "$limit")")
  done
  {
    echo
    echo "=== timings (seconds)"
    printf '%-14s %-10s %6s %6s\n' step status took limit
    printf '%s\n' "${summary[@]}"
    echo "total: $((SECONDS - started)) s"
  } | tee -a "$FIG"
  if [ "${#failed[@]}" -gt 0 ]; then
    echo "########## GPU CHECK FAILED: ${failed[*]} (log: $OUT/gpu_check.log) ##########" | tee -a "$FIG" >&2
    return 1
  fi
  echo "GPU CHECK PASSED" | tee -a "$FIG"
}

mkdir -p "$OUT"
main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
