#!/usr/bin/env bash
# Issue 18 figures: 1 rank x 2 threads vs 2 ranks x 1 thread on this machine, per backbone:
# pairs/s of one epoch (256 images at 32 px, global batch 32 = 8 optimizer steps), and the
# all-reduce time and bytes per optimizer step of the 2-rank run (README "Several processes or
# machines"). MODE=finetune: the same for `train finetune` (images/s of one epoch, validated
# on the 16 test images). OVERLAP=compare: instead, the 2-rank run with the all-reduce
# overlapped with the backward pass and without (SIAMLAB_OVERLAP=1 / 0), alternating, REPS
# times each (default 2). BIN: a build with `--features mpi` (default: target/release, else
# target/debug); BACKBONES, W (work folder) override the defaults. Needs mpirun (apt-get
# install openmpi-bin).
set -euo pipefail
T=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}
BIN=${BIN:-$( [ -x "$T/release/siamlab" ] && echo "$T/release/siamlab" || echo "$T/debug/siamlab" )}
W=${W:-/tmp/siamlab-parallel-bench}
mkdir -p "$W"
[ -f "$W/data/manifest.json" ] || "$BIN" ingest shapes --count 256 --test-count 16 --size 32 --seed 0 --out "$W/data" -q
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MODE=${MODE:-pretrain}
case $MODE in
  pretrain) common=(train pretrain --data "$W/data" --epochs 1 --knn-every 0 --workers 1) ;;
  finetune) common=(train finetune --data "$W/data" --epochs 1 --val-split test --workers 1) ;;
  *) echo "MODE=$MODE: pretrain or finetune" >&2; exit 2 ;;
esac
# two_ranks BACKBONE OUT [ENV=VALUE]: the last epoch line of a 2-rank run.
two_ranks() {
  local bb=$1 out=$2; shift 2
  rm -rf "$out"
  mpirun --oversubscribe --bind-to none -n 2 -x RAYON_NUM_THREADS=1 "$@" "$BIN" "${common[@]}" --backbone "$bb" \
    --batch 16 --out "$out" 2>&1 | grep -E "epoch.*(pairs|img)/s" | tail -1
}
if [ "${OVERLAP:-}" = compare ]; then
  for bb in ${BACKBONES:-resnet18 efficientnet_b0 vit_s pit_ti}; do
    for rep in $(seq "${REPS:-2}"); do
      for ov in 0 1; do
        echo "$bb | 2x1, run $rep, SIAMLAB_OVERLAP=$ov: $(two_ranks "$bb" "$W/ov-$bb" -x SIAMLAB_OVERLAP=$ov)"
      done
    done
  done
  exit 0
fi
for bb in ${BACKBONES:-resnet18 efficientnet_b0 vit_s pit_ti}; do
  rm -rf "$W/one-$bb"
  one=$(RAYON_NUM_THREADS=2 "$BIN" "${common[@]}" --backbone "$bb" --batch 32 --out "$W/one-$bb" 2>&1 | grep -E "epoch.*(pairs|img)/s" | tail -1)
  two=$(two_ranks "$bb" "$W/two-$bb")
  echo "$bb | 1x2: $one"
  echo "$bb | 2x1: $two"
done
