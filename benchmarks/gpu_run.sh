#!/usr/bin/env bash
# The first GPU run, prepared: install the GPU stack, run the GPU preflight, the --gpu throughput benchmark
# (shortened) and the --gpu soak, and write everything to $OUT (or benchmarks/results/gpu-run). Each step
# has its own time limit, about 9 minutes together, and a failed step does not stop the ones after it
# except where they cannot run (no stack, no speech synthesiser). Run from the repository root:
#   bash benchmarks/gpu_run.sh
# Wheels: with a folder .whl/ (or WHEELS=dir) the project and its dependencies install from it, offline, on
# top of the machine's own torch; otherwise `make install-gpu` fetches them (torch from the CUDA 12 index).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-run}
WHEELS=${WHEELS:-.whl}
VENV=${GPU_VENV:-/tmp/transcribe-serve-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-run.log") 2>&1
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
started=$SECONDS

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log its status, never abort the script
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) ==="
  timeout --signal=TERM --kill-after=20 "$limit" "$@"
  local status=$?
  echo "=== $name: exit $status after $((SECONDS - started)) s in all ==="
  echo "$name $status" >> "$OUT/steps.txt"
  return $status
}

# A venv over the machine's own packages (its torch, where it has one), the project installed into it.
if [ -d "$WHEELS" ]; then
  INSTALL="\"$VENV/bin/python\" -m pip install --quiet --no-index --find-links \"$WHEELS\" -e '.[gpu]'"
else
  INSTALL="make install-gpu VENV=\"$VENV\""
fi

step machine 30 bash -c 'nvidia-smi; nvidia-smi -q | grep -iE "driver version|cuda version|mig mode" | sort -u; python3 --version'
step install 150 bash -c "python3 -m venv --system-site-packages \"$VENV\" && $INSTALL" || { echo "the GPU stack did not install: nothing else can run"; exit 1; }
PY="$VENV/bin/python"
step versions 60 "$PY" -c 'import ctranslate2, faster_whisper, torch, ray
print("ctranslate2", ctranslate2.__version__, "cuda devices", ctranslate2.get_cuda_device_count())
print("faster-whisper", faster_whisper.__version__, "ray", ray.__version__)
print("torch", torch.__version__, "built for CUDA", torch.version.cuda, "sees", torch.cuda.is_available())'
# The named CUDA checks on this machine: ctranslate2's device, float16, a tiny encode, torch, NVML.
step preflight 120 "$PY" -m serve_app.cli check configs/local.yaml --offline --gpu
preflight=$?
if ! command -v espeak-ng >/dev/null || ! command -v ffmpeg >/dev/null; then
  echo "espeak-ng and ffmpeg make and decode the benchmarks' speech; this machine lacks one: no benchmark"
  exit 1
fi
[ "$preflight" = 0 ] || echo "the preflight failed: the benchmarks below show how the deployment fails"
# audio-h/h per card, VRAM over time and GPU utilisation: four Whisper replicas and the embedder on the card.
step throughput 300 "$PY" -m benchmarks.throughput --gpu --quick --concurrency 16 --long-minutes 2 --out "$OUT"
step soak 150 "$PY" -m benchmarks.soak --gpu --requests 40 --concurrent-requests 64 --clients 16 --out "$OUT"
cat "$OUT/steps.txt"
