#!/usr/bin/env bash
# siamlab beside its PyTorch peers, in one sitting on this machine: prints one Markdown table.
#
#   benches/run.sh [--quick] [--only simsiam|finetune|pipeline|ingest[,...]]
#
# Rows: ingest images/s (siamlab only); SimSiam augmentation pipeline pairs/s at 32 and 96 px vs
# torchvision's DataLoader (peer_pipeline_bench.py); SimSiam training steps (pairs/s) and
# finetuning steps (images/s, one view, cross-entropy over 10 classes) for ResNet-18,
# EfficientNet-B0, ViT-S and PiT-Ti at 32 px and ResNet-18 (ImageNet stem) and EfficientNet-B0
# at 96 px vs PyTorch eager (peer_train.py, the same architectures), with each side's GFLOP/s
# and its fraction of this machine's fp32 FMA peak. Within a row the two sides run back to
# back, alternating which goes first.
#
# Environment:
#   SIAMLAB=path       the siamlab binary (default: `cargo build --release` here, then that one)
#   PEER_PYTHON=path   a python with the packages of benches/requirements.txt
#                      (default /tmp/peer/bin/python; make one with
#                      python3 -m venv /tmp/peer && /tmp/peer/bin/pip install -r benches/requirements.txt)
#   PEAK_GFLOPS=x      this machine's fp32 peak, instead of `siamlab bench peak`'s measurement
#                      (or, where that fails, cores x GHz x FLOP/cycle)
#   FLOP_PER_CYCLE=n   fp32 FLOP per cycle per core, instead of the guess from the CPU flags
#   BENCH_SCALE=x      multiplies the timed steps and images of every row (default 1)
#   BENCH_LOGS=dir     where each command's output goes (default: a new folder under /tmp)
# The table goes to stdout, progress to stderr. Exit status 1 when a command failed (its cell
# then says so; the other rows still run).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ALL=(ingest pipeline simsiam finetune)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 2; }

QUICK=0
ONLY=$(IFS=,; echo "${ALL[*]}")
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --only) [ $# -ge 2 ] || die "--only needs one of: ${ALL[*]}"; ONLY=$2; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
IFS=, read -r -a PARTS <<< "$ONLY"
[ ${#PARTS[@]} -gt 0 ] || die "--only needs one of: ${ALL[*]}"
for p in "${PARTS[@]}"; do
  case " ${ALL[*]} " in *" $p "*) ;; *) die "--only: unknown part '$p' (one of: ${ALL[*]})" ;; esac
done
wants() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

SCALE=${BENCH_SCALE:-1}
awk -v s="$SCALE" 'BEGIN { exit !(s ~ /^[0-9]*\.?[0-9]+$/ && s > 0) }' || die "BENCH_SCALE must be a positive number, not '$SCALE'"
# scaled N: N x BENCH_SCALE, rounded up, at least 1
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = n * s; r = int(v); if (r < v) r++; if (r < 1) r = 1; print r }'; }

# --- the two programs -------------------------------------------------------------------------
PEER_PYTHON=${PEER_PYTHON:-/tmp/peer/bin/python}
if ! PEER_VERSIONS=$("$PEER_PYTHON" -c '
import torch, torchvision
try:
    import timm; t = timm.__version__
except ImportError:
    t = "missing (no pit_ti peer)"
print(f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}, timm {t}; {torch.get_num_threads()} threads")
' 2>/dev/null); then
  die "PEER_PYTHON=$PEER_PYTHON cannot import torch and torchvision; make the peer environment with
  python3 -m venv /tmp/peer && /tmp/peer/bin/pip install -r $HERE/requirements.txt"
fi

LOGS=${BENCH_LOGS:-$(mktemp -d "${TMPDIR:-/tmp}/siamlab-bench.XXXXXX")}
mkdir -p "$LOGS"
if [ -z "${SIAMLAB:-}" ]; then
  echo "building siamlab (release) ..." >&2
  (cd "$ROOT" && cargo build --release --bin siamlab) >&2 || die "cargo build --release failed"
  TARGET=${CARGO_TARGET_DIR:-target}
  case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
  SIAMLAB=$TARGET/release/siamlab
fi
[ -x "$SIAMLAB" ] || die "SIAMLAB=$SIAMLAB is not an executable"
# a private copy: a rebuild during the run does not swap the binary under it
cp "$SIAMLAB" "$LOGS/siamlab"
BIN=$LOGS/siamlab
SIAMLAB_VERSION=$("$BIN" --version 2>/dev/null || echo "siamlab (version unknown)")
GIT_REV=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || true)

# --- the machine and its peak -----------------------------------------------------------------
lscpu_field() { lscpu 2>/dev/null | sed -n "s/^$1: *//p" | head -1; }
CPU_MODEL=$(lscpu_field 'Model name'); CPU_MODEL=${CPU_MODEL:-unknown CPU}
CPU_MODEL="$CPU_MODEL (family $(lscpu_field 'CPU family') model $(lscpu_field 'Model'))"
SOCKETS=$(lscpu_field 'Socket(s)'); PER_SOCKET=$(lscpu_field 'Core(s) per socket')
THREADS=$(nproc)
if [[ $SOCKETS =~ ^[0-9]+$ && $PER_SOCKET =~ ^[0-9]+$ ]]; then CORES=$((SOCKETS * PER_SOCKET)); else CORES=$THREADS; fi
(( CORES <= THREADS )) || CORES=$THREADS   # a cgroup or affinity may give us fewer
VENDOR=$(lscpu_field 'Vendor ID'); FAMILY=$(lscpu_field 'CPU family')
FLAGS=" $(lscpu_field 'Flags') "
has() { case $FLAGS in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
MAX_MHZ=$(lscpu_field 'CPU max MHz')
if [[ $MAX_MHZ =~ ^[0-9.]+$ ]] && awk -v m="$MAX_MHZ" 'BEGIN { exit !(m > 0) }'; then
  MHZ=$MAX_MHZ; MHZ_FROM="lscpu's CPU max MHz"
else
  MHZ=$(sed -n 's/^cpu MHz[[:space:]]*: *//p' /proc/cpuinfo 2>/dev/null | sort -g | tail -1)
  MHZ_FROM="cpu MHz in /proc/cpuinfo; a boost clock above it can push a fraction past 100%"
fi
if [ -n "${FLOP_PER_CYCLE:-}" ]; then
  FPC=$FLOP_PER_CYCLE; FPC_WHY="FLOP_PER_CYCLE"
elif has avx512f && [ "$VENDOR" = AuthenticAMD ] && [ "$FAMILY" = 25 ]; then
  FPC=32; FPC_WHY="AMD Zen 4: AVX-512 executed as 2 x 256-bit FMA"
elif has avx512f && [ "$VENDOR" = AuthenticAMD ]; then
  FPC=64; FPC_WHY="AMD with AVX-512 after Zen 4: 2 x 512-bit FMA"
elif has avx512f; then
  FPC=64; FPC_WHY="AVX-512, 2 x 512-bit FMA units (parts with one unit peak at half)"
elif has avx2 && has fma; then
  FPC=32; FPC_WHY="AVX2, 2 x 256-bit FMA"
elif has avx; then
  FPC=16; FPC_WHY="AVX without FMA"
else
  FPC=8; FPC_WHY="SSE"
fi
MEASURED=""
[ -n "${PEAK_GFLOPS:-}" ] || MEASURED=$("$SIAMLAB" bench peak 2>/dev/null | tail -1)
if [ -n "${PEAK_GFLOPS:-}" ]; then
  PEAK=$PEAK_GFLOPS; PEAK_HOW="PEAK_GFLOPS=$PEAK_GFLOPS (set by the user)"
elif [[ $MEASURED =~ ^[0-9.]+$ ]]; then
  PEAK=$MEASURED
  PEAK_HOW="$MEASURED GFLOP/s measured by \`siamlab bench peak\` (fp32 FMAs on registers, all $THREADS threads); from the clock lscpu reports it would be $(awk -v c="$CORES" -v m="${MHZ:-0}" -v f="$FPC" 'BEGIN { printf "%.0f", c * m / 1000 * f }')"
elif [[ ${MHZ:-} =~ ^[0-9.]+$ ]]; then
  PEAK=$(awk -v c="$CORES" -v m="$MHZ" -v f="$FPC" 'BEGIN { printf "%.1f", c * m / 1000 * f }')
  PEAK_HOW=$(awk -v c="$CORES" -v m="$MHZ" -v f="$FPC" -v p="$PEAK" -v w="$FPC_WHY" -v s="$MHZ_FROM" \
    'BEGIN { printf "%d cores x %.3f GHz (%s) x %d fp32 FLOP/cycle (%s) = %.0f GFLOP/s", c, m / 1000, s, f, w, p }')
else
  PEAK=""; PEAK_HOW="unknown (no clock found; set PEAK_GFLOPS)"
fi

# --- running the rows -------------------------------------------------------------------------
FAILED=0
ROWS=()
N_STEP=0

# side NAME CMD...: runs CMD with its output in $LOGS/NAME.log; sets RC.
side() {
  local name=$1; shift
  N_STEP=$((N_STEP + 1))
  echo "[$N_STEP] $name: $*" >&2
  local s0=$SECONDS
  set +e
  "$@" > "$LOGS/$name.log" 2>&1
  RC=$?
  set -e
  echo "    exit $RC after $((SECONDS - s0)) s" >&2
  [ $RC -eq 0 ] || FAILED=1
}

# value NAME REGEX: the last number in the last match of REGEX in NAME's log
value() { grep -oE "$2" "$LOGS/$1.log" 2>/dev/null | tail -1 | grep -oE '[0-9]+(\.[0-9]+)?' | tail -1 || true; }

# cell NAME RC VALUE: VALUE, or why there is none
cell() {
  if [ -n "$3" ] && [ "$2" -eq 0 ]; then echo "$3"
  elif [ -n "$3" ]; then echo "$3 (exit $2)"
  else echo "failed (exit $2, $1.log)"; fi
}

fmt() { awk -v v="$1" 'BEGIN { if (v !~ /^[0-9.]+$/) print v; else if (v >= 100) printf "%.0f", v; else printf "%.1f", v }'; }

# row LABEL UNIT S_CELL S_VALUE P_CELL P_VALUE GFLOP: one table row
row() {
  local label=$1 unit=$2 sc=$3 sv=$4 pc=$5 pv=$6 g=$7
  ROWS+=("$(awk -v l="$label" -v u="$unit" -v sc="$(fmt "$sc")" -v sv="$sv" -v pc="$(fmt "$pc")" -v pv="$pv" \
    -v g="$g" -v peak="$PEAK" 'BEGIN {
      num = "^[0-9]+(\\.[0-9]+)?$"
      r = (sv ~ num && pv ~ num && pv > 0) ? sprintf("%.2fx", sv / pv) : "-"
      gs = "-"; gp = "-"; gc = "-"
      if (g ~ num) {
        gc = sprintf("%.2f", g)
        if (sv ~ num) { gs = sprintf("%.0f", sv * g); if (peak ~ num) gs = gs sprintf(" (%.0f%%)", 100 * sv * g / peak) }
        if (pv ~ num) { gp = sprintf("%.0f", pv * g); if (peak ~ num) gp = gp sprintf(" (%.0f%%)", 100 * pv * g / peak) }
      } else if (g == "") { gc = ""; gs = ""; gp = "" }
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |", l, u, sc, pc, r, gc, gs, gp }')")
}

ORDER=0   # alternates which side of a row runs first

# pair NAME SIAMLAB_CMD -- PEER_CMD: both sides, alternating the order; sets S_RC P_RC
pair() {
  local name=$1; shift
  local scmd=() pcmd=()
  while [ "$1" != -- ]; do scmd+=("$1"); shift; done
  shift; pcmd=("$@")
  ORDER=$((1 - ORDER))
  if [ $ORDER -eq 1 ]; then
    side "$name-siamlab" "${scmd[@]}"; S_RC=$RC
    side "$name-peer" "${pcmd[@]}"; P_RC=$RC
  else
    side "$name-peer" "${pcmd[@]}"; P_RC=$RC
    side "$name-siamlab" "${scmd[@]}"; S_RC=$RC
  fi
}

if [ $QUICK -eq 1 ]; then B=16; WARMUP=1; else B=64; WARMUP=2; fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

if wants ingest; then
  n=$(scaled $((QUICK ? 6000 : 60000)))
  side ingest "$BIN" bench ingest --count "$n"
  v=$(value ingest '= [0-9]+(\.[0-9]+)? images/s')
  row "ingest, CIFAR-10 binary layout (generated), $n images, to PNG shards" "images/s" \
    "$(cell ingest "$RC" "$v")" "$v" "no peer" "" ""
fi

if wants pipeline; then
  for size in 32 96; do
    if [ $size = 32 ]; then sn=40000 pn=20000; else sn=10000 pn=3000; fi
    if [ $QUICK -eq 1 ]; then sn=$((sn / 10)) pn=$((pn / 10)); fi
    sn=$(scaled $sn); pn=$(scaled $pn)
    pair "pipeline-$size" "$BIN" bench pipeline --size $size --count "$sn" --epochs 3 --workers "$THREADS" \
      -- "$PEER_PYTHON" "$HERE/peer_pipeline_bench.py" $size "$pn" "$THREADS" v1
    sv=$(value "pipeline-$size-siamlab" 'simsiam: [0-9]+(\.[0-9]+)?')
    pv=$(value "pipeline-$size-peer" 'pairs_per_s=[0-9]+(\.[0-9]+)?')
    row "pipeline, SimSiam two views, $size px$([ $size = 96 ] && echo ', with blur'), $THREADS workers" \
      "pairs/s" "$(cell "pipeline-$size-siamlab" "$S_RC" "$sv")" "$sv" "$(cell "pipeline-$size-peer" "$P_RC" "$pv")" "$pv" ""
  done
fi

# name size label simsiam-steps finetune-steps (timed steps at batch 64; ~10-30 s a side here).
# ViT-S's finetuning needs 8: its first Adam steps at lr 1e-3 raise the loss (on both sides),
# which falls below the first step's only from the 10th step on (2 warm-up + 8).
MODELS=(
  "resnet18 32 ResNet-18_(CIFAR_stem) 5 10"
  "efficientnet_b0 32 EfficientNet-B0_(stride-1_stem) 8 12"
  "vit_s 32 ViT-S_(patch_4) 2 8"
  "pit_ti 32 PiT-Ti_(patch_4,_stride_2) 8 12"
  "resnet18_imagenet 96 ResNet-18_(ImageNet_stem) 6 10"
  "efficientnet_b0 96 EfficientNet-B0_(stride-2_stem) 5 10"
)
for mode in simsiam finetune; do
  wants $mode || continue
  for m in "${MODELS[@]}"; do
    read -r bb size label ss fs <<< "$m"
    label=${label//_/ }
    if [ $QUICK -eq 1 ]; then steps=3; elif [ $mode = simsiam ]; then steps=$(scaled "$ss"); else steps=$(scaled "$fs"); fi
    name="$mode-$bb-$size"
    if [ $mode = simsiam ]; then unit=pairs/s; rate=pairs_per_s; what="SimSiam step"; else unit=images/s; rate=images_per_s; what="finetuning step, 10 classes"; fi
    pair "$name" "$BIN" bench $mode --backbone "$bb" --image-size "$size" --batch $B --steps "$steps" --warmup $WARMUP \
      -- env PEER_DEVICE=cpu PEER_WARMUP=$WARMUP "$PEER_PYTHON" "$HERE/peer_train.py" "$bb" $B "$steps" "$size" $mode
    sv=$(value "$name-siamlab" "$rate=[0-9]+(\.[0-9]+)?")
    pv=$(value "$name-peer" "$rate=[0-9]+(\.[0-9]+)?")
    g=$(value "$name-peer" 'gflop_per_sample=[0-9]+(\.[0-9]+)?')
    row "$what, $label, $size px, batch $B, $steps steps" "$unit" \
      "$(cell "$name-siamlab" "$S_RC" "$sv")" "$sv" "$(cell "$name-peer" "$P_RC" "$pv")" "$pv" "${g:-?}"
  done
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

# --- the table --------------------------------------------------------------------------------
cat <<EOF
**siamlab vs PyTorch on CPU, $DATE**$([ $QUICK -eq 1 ] && echo ' (--quick: batch 16, 3 timed steps; smoke run, noisy)')

Machine: $CPU_MODEL, $CORES cores ($THREADS threads), $(uname -sr); load average $LOAD_BEFORE before, $LOAD_AFTER after.
siamlab: $SIAMLAB_VERSION${GIT_REV:+ ($GIT_REV)}. Peer: $PEER_VERSIONS.
fp32 peak: $PEAK_HOW.

| what | unit | siamlab | PyTorch | ratio | GFLOP per pair / image | siamlab GFLOP/s (of peak) | PyTorch GFLOP/s (of peak) |
|---|---|--:|--:|--:|--:|--:|--:|
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF

Ratio: siamlab / PyTorch (above 1: siamlab is faster). Pipeline rows: siamlab reads generated
noise images from PNG shards (\`siamlab bench pipeline\`), torchvision's v1 DataLoader augments
them from memory (\`benches/peer_pipeline_bench.py\`). Training rows: random inputs, one fixed
batch, Adam (lr 1e-3, weight decay 1e-5), fp32, $WARMUP untimed step(s) first; equal networks on
both sides (\`benches/peer_train.py\` builds siamlab's preset for each backbone and size). GFLOP
per pair (SimSiam: two views with projector and predictor) or per image (finetuning): 3 x the
forward FLOPs counted by PyTorch's FlopCounterMode (convolutions, matmuls, attention; 2 per
multiply-add), one figure for both sides. "(exit N)": the command printed its figure but failed
afterwards (siamlab's training benches fail when the loss did not fall). Logs: $LOGS.
EOF
exit $FAILED
