#!/usr/bin/env bash
# Issue 18 figures: 1 rank x 2 threads vs 2 ranks x 1 thread on this machine, per backbone:
# pairs/s of one epoch (256 images at 32 px, global batch 32 = 8 optimizer steps), and the
# all-reduce time and bytes per optimizer step of the 2-rank run (README "Several processes or
# machines"). MODE=finetune: the same for `train finetune` (images/s of one epoch, validated
# on the 16 test images). BIN: a build with `--features mpi` (default: target/release, else
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
for bb in ${BACKBONES:-resnet18 efficientnet_b0 vit_s pit_ti}; do
  rm -rf "$W/one-$bb" "$W/two-$bb"
  one=$(RAYON_NUM_THREADS=2 "$BIN" "${common[@]}" --backbone "$bb" --batch 32 --out "$W/one-$bb" 2>&1 | grep -E "epoch.*(pairs|img)/s" | tail -1)
  two=$(mpirun --oversubscribe --bind-to none -n 2 -x RAYON_NUM_THREADS=1 "$BIN" "${common[@]}" --backbone "$bb" --batch 16 --out "$W/two-$bb" 2>&1 | grep -E "epoch.*(pairs|img)/s" | tail -1)
  echo "$bb | 1x2: $one"
  echo "$bb | 2x1: $two"
done
