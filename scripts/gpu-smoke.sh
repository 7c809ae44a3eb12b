#!/usr/bin/env bash
# GPU smoke test + throughput comparison for a dist/ packed by scripts/build-cuda.sh.
# Run it on the GPU machine from dist/ (no Rust, no network):   ./gpu-smoke.sh
# Needs the NVIDIA driver (580 = CUDA 13.0) and, for the PyTorch peer numbers and the CUDA 13 libs,
# a python3 with torch (cu130) + torchvision (+ timm for the pit_ti peer). PYTHON=... picks another one.
# Everything printed also goes to gpu-smoke-<date>.log next to this script (and into $OUT if set).
# Steps keep going after a failure; the exit status is non-zero if any step failed or was skipped.
# Wall time is capped: SMOKE_BUDGET seconds in all (default 450), of which the throughput part is
# guaranteed SMOKE_TPUT_RESERVE (default 150).
set -uo pipefail

H=$(cd "$(dirname "$0")" && pwd)
cd "$H" || exit 1
STAMP=$(date +%Y%m%d-%H%M%S)
LOGDIR=$H; [ -w "$LOGDIR" ] || LOGDIR=${TMPDIR:-/tmp}
LOGS=("$LOGDIR/gpu-smoke-$STAMP.log")
if [ -n "${OUT:-}" ] && mkdir -p "$OUT" 2>/dev/null; then LOGS+=("$OUT/gpu-smoke-$STAMP.log"); fi

SIAMLAB=${SIAMLAB:-./siamlab}
PY=${PYTHON:-python3}
BUDGET=${SMOKE_BUDGET:-450}
RESERVE=${SMOKE_TPUT_RESERVE:-150}
BACKBONES=(resnet18 efficientnet_b0 vit_s pit_ti)
export PYTHONUNBUFFERED=1 PYTHON=$PY

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
declare -A ST=()      # step name -> PASS | FAIL(rc) | TIMEOUT | SKIPPED
ORDER=()
T0=$SECONDS
DEADLINE=$BUDGET      # seconds after T0 by which the current phase must end

# step NAME CAP CMD... : run CMD with a timeout of min(CAP, time left before DEADLINE); output goes
# to the terminal/log and to $WORK/NAME.out; the result is recorded in ST[NAME].
step() {
  local name=$1 cap=$2 left t rc; shift 2
  left=$(( DEADLINE - (SECONDS - T0) )); t=$(( cap < left ? cap : left ))
  ORDER+=("$name")
  echo
  echo "=== [$name] $*   (timeout ${t}s; $(( SECONDS - T0 ))s of ${BUDGET}s used)"
  if (( t < 5 )); then
    echo "--- [$name] SKIPPED: time budget exhausted"; ST[$name]=SKIPPED; return 1
  fi
  local s0=$SECONDS
  timeout -k 5 "$t" "$@" 2>&1 | tee "$WORK/$name.out"; rc=${PIPESTATUS[0]}
  case $rc in
    0) ST[$name]=PASS ;;
    124|137) ST[$name]=TIMEOUT ;;
    *) ST[$name]="FAIL(rc=$rc)" ;;
  esac
  echo "--- [$name] ${ST[$name]} in $(( SECONDS - s0 ))s"
  [ "$rc" -eq 0 ]
}

# rate NAME PREFIX : pairs/s from the last "PREFIX ... pairs_per_s=X" line of step NAME, else its status
rate() {
  local f=$WORK/$1.out v
  case ${ST[$1]:-} in
    PASS) ;;
    "") echo "not run"; return ;;
    TIMEOUT) echo "failed (timeout)"; return ;;
    SKIPPED) echo "not run (time budget)"; return ;;
    *) echo "failed"; return ;;
  esac
  v=$(grep -E "^$2 " "$f" 2>/dev/null | tail -1 | grep -oE 'pairs_per_s=[0-9.]+' | cut -d= -f2)
  if [ -n "$v" ]; then echo "$v"
  elif grep -q skipped "$f" 2>/dev/null; then echo skipped
  else echo "failed (no pairs_per_s)"; fi
}

main() {
  echo "gpu-smoke $(date -Is) on $(hostname) in $H"
  echo "log: ${LOGS[*]}"

  echo; echo "##### a. environment"
  if command -v nvidia-smi >/dev/null; then step nvidia-smi 20 nvidia-smi
  else echo "(nvidia-smi not on PATH)"; fi
  "$PY" -c 'import torch;print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
    2>&1 || echo "($PY has no usable torch: the PyTorch peer numbers will fail)"
  # resolve the CUDA libs once (run-on-gpu.sh may otherwise search the disk on every call)
  if [ -z "${CUDA_LIBS:-}" ]; then
    # shellcheck disable=SC2016  # expanded by the inner sh, after run-on-gpu.sh set LD_LIBRARY_PATH
    CUDA_LIBS=$(./run-on-gpu.sh sh -c 'printf %s "${LD_LIBRARY_PATH%%:*}"' 2>/dev/null) && export CUDA_LIBS
  fi
  step version 30 ./run-on-gpu.sh "$SIAMLAB" --version

  echo; echo "##### b. per-op CUDA vs CPU check (forward + backward, rel. error <= 1e-4)"
  DEADLINE=$(( BUDGET - RESERVE ))
  step ops 90 ./run-on-gpu.sh "$SIAMLAB" bench ops --device cuda

  echo; echo "##### c. SimSiam runs on random data (200 steps, B=64, 32 px): loss must decrease, no NaN;"
  echo "#####    each ends with its GPU time per op, forward and backward (SIAMLAB_PROFILE=1: every op"
  echo "#####    waits for the GPU, so these runs are a little slower than section d's)"
  for b in "${BACKBONES[@]}"; do
    step "simsiam-$b" 90 env SIAMLAB_PROFILE=1 ./run-on-gpu.sh "$SIAMLAB" bench simsiam --device cuda \
      --backbone "$b" --image-size 32 --batch 64 --steps 200
  done

  echo; echo "##### d. throughput: siamlab (dfdx CUDA) vs PyTorch eager fp32, 30 steps, 32 px"
  DEADLINE=$BUDGET
  for b in "${BACKBONES[@]}"; do   # interleaved, so a slow backbone still leaves whole rows
    local bs=64; [ "$b" = resnet18 ] && bs=256
    step "tput-siamlab-$b" 60 ./run-on-gpu.sh "$SIAMLAB" bench simsiam --device cuda --backbone "$b" \
      --image-size 32 --batch "$bs" --steps 30
    step "tput-torch-$b" 60 "$PY" peer_train.py "$b" "$bs" 30 32
  done

  echo; echo "##### summary"
  local n fail=0
  for n in "${ORDER[@]}"; do
    printf '%-30s %s\n' "$n" "${ST[$n]}"
    [ "${ST[$n]}" = PASS ] || fail=1
  done
  echo
  echo "| backbone | batch | siamlab pairs/s | PyTorch pairs/s | ratio |"
  echo "|---|---:|---:|---:|---:|"
  for b in "${BACKBONES[@]}"; do
    local bs=64 s t; [ "$b" = resnet18 ] && bs=256
    s=$(rate "tput-siamlab-$b" siamlab-cuda); t=$(rate "tput-torch-$b" pytorch-cuda)
    awk -v b="$b" -v bs="$bs" -v s="$s" -v t="$t" 'BEGIN {
      num = "^[0-9]+(\\.[0-9]+)?$"
      r = (s ~ num && t ~ num && t + 0 > 0) ? sprintf("%.2f", s / t) : "-"
      printf "| %s | %s | %s | %s | %s |\n", b, bs, s, t, r }'
  done
  echo "(ratio = siamlab / PyTorch; PyTorch: fp32 eager, TF32 off, cudnn defaults)"
  echo
  if [ "$fail" -eq 0 ]; then echo "gpu-smoke: ALL PASSED in $(( SECONDS - T0 ))s"
  else echo "gpu-smoke: FAILURES (see above) after $(( SECONDS - T0 ))s"; fi
  echo "log: ${LOGS[*]}"
  return "$fail"
}

main 2>&1 | tee "${LOGS[@]}"
exit "${PIPESTATUS[0]}"
