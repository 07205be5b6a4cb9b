#!/usr/bin/env bash
# Fetch, here, what the GPU machine's image lacks, into the ignored folder .whl/, for
# benchmarks/gpu_check.sh (which installs it there with --no-index: nothing can be fetched there).
#
#   bash benchmarks/gpu_wheels.sh            # diffusers, clean-fid, lpips, ... and a slimmed Ray
#   bash benchmarks/gpu_wheels.sh --no-ray   # without Ray: gpu_check.sh then skips the Ray tests
#
# Versions are pinned to what the project venv (.venv, or $PYTHON) has installed. The image
# (Python 3.12, torch 2.11 + CUDA 13; package list in the device tool's KINDS.md, copied below)
# has every other dependency of pyproject.toml; torch is never fetched, so the image's CUDA
# build is what runs there (constraints-cpu.txt / scripts/setup.sh are not used there).
#
# Ray's wheel is 76 MiB, over the 64 MiB the working tree may carry to that machine. Of it,
# ray/jars (31 MiB, Java workers only) and the dashboard's source maps are dropped, the native
# binaries (_raylet.so, gcs_server, raylet, bundled .so files) are stripped of symbols, and the
# rest is packed as .whl/ray-<version>-cp312-slim.tar.xz (about 19 MiB; xz -9 takes about 2 minutes
# on 2 cores here).
# Every Python module of Ray stays. The script ends by printing the size that would travel
# (repository + .whl) and fails when it is over 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_RAY=1
case "${1:-}" in
  --no-ray) WITH_RAY=0 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_wheels.sh [--no-ray]" >&2; exit 2 ;;
esac
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "error: $PY not found: run scripts/setup.sh first (versions are read from it)" >&2; exit 1; }
LIMIT_MIB=64
DEST=.whl
if [ -d .git/info ] && ! grep -qxF '/.whl/' .git/info/exclude 2>/dev/null; then
  echo '/.whl/' >> .git/info/exclude
fi
mkdir -p "$DEST"

# Missing from the image: diffusers (and its importlib-metadata, which needs lazy-importer), the
# metrics packages, and Ray with jsonschema (whose own needs follow). The check below lists every
# Requires-Dist of what is carried and fails on one that is neither carried nor in the image.
PKGS=(diffusers importlib-metadata lazy-importer clean-fid lpips)
RAY_DEPS=(jsonschema jsonschema-specifications referencing rpds-py)
[ "$WITH_RAY" = 1 ] && PKGS+=("${RAY_DEPS[@]}")

pin() {
  "$PY" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' "$1"
}

# pip matches --platform tags exactly; these cover the wheels above (README of the device tool).
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
download() {  # NAME==VERSION -> into $1 (default .whl)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "${2:-$DEST}" "$1"
}

rm -f "$DEST"/*.whl  # one version of each: two would stop the install there
for name in "${PKGS[@]}"; do
  spec="$name==$(pin "$name")"
  echo "download $spec"
  download "$spec"
done

rm -rf "$DEST/ray-meta"
if [ "$WITH_RAY" = 1 ]; then
  ray_version=$(pin ray)
  slim="$DEST/ray-$ray_version-cp312-slim.tar.xz"
  find "$DEST" -maxdepth 1 -name 'ray-*-slim.tar.xz' ! -path "$slim" -delete
  if [ ! -f "$slim" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "download ray==$ray_version (then slim it: drop ray/jars and source maps, strip binaries, xz -9)"
    download "ray==$ray_version" "$work"
    "$PY" - "$work"/ray-*.whl "$work/tree" <<'UNZIP'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:  # unzip, keeping the executable bits (binaries, .so)
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
UNZIP
    rm -rf "$work/tree/ray/jars"
    find "$work/tree" -name '*.map' -delete
    if command -v strip >/dev/null 2>&1; then
      find "$work/tree" -name '*.so' -exec strip --strip-unneeded {} + 2>/dev/null || true
      strip --strip-unneeded "$work/tree/ray/core/src/ray/gcs/gcs_server" "$work/tree/ray/core/src/ray/raylet/raylet"
    else
      echo "warning: no strip (binutils): the Ray tarball will be about 25 MiB larger" >&2
    fi
    # the RECORD lists what was dropped; nothing there reads it (no pip uninstall in /tmp/site)
    tar -C "$work/tree" -cf - . | xz -9 -T1 > "$slim.tmp"  # one thread packs tighter
    mv "$slim.tmp" "$slim"
    rm -rf "$work"
    trap - EXIT
  fi
  mkdir -p "$DEST/ray-meta"  # Ray's METADATA, for the dependency check below
  tar -xJf "$slim" -C "$DEST/ray-meta" --wildcards '*.dist-info/METADATA'
else
  find "$DEST" -maxdepth 1 -name 'ray-*-slim.tar.xz' -delete
fi

# Every Requires-Dist of what is carried (ray: with its "data" extra), against the image's list.
check=0
"$PY" - "$DEST" "$WITH_RAY" <<'EOF' || check=$?
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

dest, with_ray = Path(sys.argv[1]), sys.argv[2] == "1"
# The device tool's KINDS.md, "Python packages already there" (nvidia-h200 image 'cuda').
IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash
yarl zipp""".split())
# Versions there, where KINDS.md's pip-list row gives them.
IMAGE_VERSIONS = {"accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
                  "sentencepiece": "0.2.2", "tokenizers": "0.23.2", "torch": "2.11.0", "torchvision": "0.26.0",
                  "transformers": "5.17.0", "triton": "3.6.0"}
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


metas = {}
for whl in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metas[whl.name] = (z.read(meta).decode(), ())
if with_ray:
    for meta in dest.glob("ray-meta/*.dist-info/METADATA"):
        metas[meta.parent.name] = (meta.read_text(), ("data",))
carried = {norm(re.search(r"^Name: (.+)$", text, re.M).group(1)) for text, _ in metas.values()}
problems = []
for label, (text, extras) in metas.items():
    print(f"{label}: Requires-Dist")
    for line in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({**ENV, "extra": e}) for e in (extras or ("",))):
            continue  # another extra or another Python
        name = norm(req.name)
        if name in carried:
            where = "carried"
        elif name in IMAGE:
            have = IMAGE_VERSIONS.get(name)
            if have and req.specifier and have not in req.specifier:
                where = f"IMAGE HAS {have}: CONFLICT"
                problems.append(f"{label}: {req} but the image has {have}")
            else:
                where = f"in the image{f' ({have})' if have else ''}"
        else:
            where = "MISSING"
            problems.append(f"{label}: {req} is neither in the image nor carried")
        print(f"    {str(req):48s} {where}")
if problems:
    print("\nerror: the GPU image would lack what these need:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("\nevery requirement is carried or in the image")
EOF
rm -rf "$DEST/ray-meta"
[ "$check" = 0 ] || exit "$check"

echo
ls -l "$DEST"
whl_bytes=$(du -sb "$DEST" | cut -f1)
tree_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$((whl_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "wheels: $(mib "$whl_bytes"); repository that travels (tracked + untracked, not ignored): $(mib "$tree_bytes")"
echo "total sent to the GPU machine with carry [\".whl\"]: $(mib "$total") of $LIMIT_MIB MiB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: over the $LIMIT_MIB MiB the device tool sends; try --no-ray (gpu_check.sh then skips the Ray tests)" >&2
  exit 1
fi
