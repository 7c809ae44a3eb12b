#!/usr/bin/env bash
# Build siamlab with `--features cuda` (REAL dfdx CUDA kernels) on a machine that has neither a GPU
# nor a CUDA toolkit, and pack dist/ for the GPU machine (which needs no Rust and no network).
#
# The toolkit comes from NVIDIA's PyPI wheels pinned to CUDA 13.0.x (the GPU machines run driver
# 580 = CUDA 13.0; a newer nvcc emits PTX the driver rejects). libcuda.so is linked against a stub
# (the real one comes with the driver). Adapted from shared/gpu/build-cuda.sh.
#
# usage: scripts/build-cuda.sh
#   env: P=/tmp/siamlab-cuda      wheels, toolkit root, stub, target dir. Paths under $P are BAKED
#                                 into the binary (dfdx's NVRTC include dirs): keep it fixed.
#        CARGO_TARGET_DIR=$P/target   separate from the repo's target/ (CPU builds stay untouched)
#        CUDA_COMPUTE_CAP=90      sm_90 = H100/H200
#        STRIP=debug              debug: drop debug info, keep symbols (backtraces) | all | none
#        PACK=gz                  gz: ship dist/siamlab.gz (run-on-gpu.sh unpacks it on first use;
#                                 the stripped binary is tens of MB) | plain: ship dist/siamlab
#        NICE=10                  niceness of the cargo build
#   advanced (used to test the toolchain on another crate, e.g. the shared dfdx probe):
#        CRATE=<repo root>  BIN=siamlab  FEATURES=cuda  DIST=$CRATE/dist
#        (FEATURES=cuda,mpi,nccl: several GPU ranks under mpirun; also fetches NCCL's wheel, and
#        the GPU machine then needs the same Open MPI and libnccl.so.2)
# Needs: Rust stable, gcc, python3 -m pip, unzip, readelf/objdump/strip (binutils), network to
# PyPI + crates.io on the first run (wheels are reused afterwards: the script is idempotent).
set -euo pipefail

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'build-cuda.sh: error: %s\n' "$*" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
P=${P:-/tmp/siamlab-cuda}
CRATE=${CRATE:-$REPO}
BIN=${BIN:-siamlab}
FEATURES=${FEATURES-cuda}              # FEATURES= (empty) builds without --features
DIST=${DIST:-$CRATE/dist}
CAP=${CUDA_COMPUTE_CAP:-90}
STRIP=${STRIP:-debug}
PACK=${PACK:-gz}
NICE=${NICE:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$P/target}
WHL=$P/wheels; UNZ=$P/unz; ROOT=$P/cuda-root

case $P in /*) ;; *) die "P must be an absolute path (it is baked into the binary): P=$P" ;; esac
case $CARGO_TARGET_DIR in /*) ;; *) die "CARGO_TARGET_DIR must be absolute: $CARGO_TARGET_DIR" ;; esac
case $CAP in [0-9][0-9]|[0-9][0-9][0-9]) ;; *) die "CUDA_COMPUTE_CAP must look like 90, got '$CAP'" ;; esac
case $STRIP in debug|all|none) ;; *) die "STRIP must be debug, all or none, got '$STRIP'" ;; esac
case $PACK in gz|plain) ;; *) die "PACK must be gz or plain, got '$PACK'" ;; esac
[ -f "$CRATE/Cargo.toml" ] || die "no Cargo.toml in CRATE=$CRATE"
case $(basename "$DIST") in dist*) ;; *) die "DIST must be a directory named dist* (it is wiped): $DIST" ;; esac
for t in cargo gcc unzip python3 readelf objdump strip tar gzip; do
  command -v "$t" >/dev/null || die "'$t' not found on PATH"
done
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is not available (needed to download wheels)"

# CUDA 13.0.x pins. Do NOT take the newest 13.x nvcc: its PTX ISA (> 9.0) is rejected by driver 580
# (CUDA 13.0) with CUDA_ERROR_UNSUPPORTED_PTX_VERSION. Libraries are only needed for linking.
PKGS=(
  nvidia-cuda-nvcc==13.0.88      # nvcc, ptxas, cudafe++ (bin/)
  nvidia-nvvm==13.0.88           # cicc + libdevice (nvcc fails without it)
  nvidia-cuda-crt==13.0.88       # include/crt/* host_config.h etc.
  nvidia-cuda-cccl==13.0.85      # <nv/target> needed by cuda_fp16.h under nvcc
  nvidia-cuda-runtime==13.0.96   # include/cuda.h, cuda_fp16.h, libcudart
  nvidia-cuda-nvrtc==13.0.88     # libnvrtc.so.13 (+ builtins)
  nvidia-cublas==13.0.2.14       # libcublas.so.13, libcublasLt.so.13 (420 MB wheel!)
  nvidia-curand==10.4.0.35       # libcurand.so.10
)
# The `nccl` feature (GPU ranks average their gradients in GPU memory) links libnccl.
case ",$FEATURES," in *,nccl,*) PKGS+=(nvidia-nccl-cu13==2.28.9) ;; esac   # libnccl.so.2 (196 MB wheel)

# 1. download the wheels (no install into any Python); reuse what is already there
say "1/7 wheels in $WHL"
mkdir -p "$WHL"
wheels=()
for p in "${PKGS[@]}"; do
  n=${p%%==*}; v=${p##*==}; f=$(printf '%s' "$n" | tr - _)-$v-
  w=$(find "$WHL" -maxdepth 1 -name "$f*.whl" | sort | head -1)
  if [ -z "$w" ]; then
    echo "downloading $p"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHL" "$p" || die "pip download $p failed"
    w=$(find "$WHL" -maxdepth 1 -name "$f*.whl" | sort | head -1)
    [ -n "$w" ] || die "pip download $p produced no $f*.whl"
  fi
  wheels+=("$w")
done
du -sh "$WHL" | cut -f1 | sed 's/^/wheels: /'

# 2. unpack into a fake toolkit root laid out like /usr/local/cuda (skipped when up to date)
C=$UNZ/nvidia/cu13
stamp=$(printf '%s\n' "${wheels[@]##*/}")
if [ -x "$C/bin/nvcc" ] && [ "$(cat "$UNZ/.stamp" 2>/dev/null)" = "$stamp" ]; then
  say "2/7 toolkit root $ROOT is up to date"
else
  say "2/7 unpacking wheels into $UNZ"
  rm -rf "$UNZ"; mkdir -p "$UNZ"
  for w in "${wheels[@]}"; do unzip -q -o "$w" -d "$UNZ"; done
  chmod +x "$C"/bin/* "$C"/nvvm/bin/*
  mkdir -p "$C/targets"; ln -sfn .. "$C/targets/x86_64-linux"  # nvcc.profile: $(TOP)/targets/x86_64-linux/include
  ln -sfn lib "$C/lib64"
  ( cd "$C/lib"
    for l in cublas cublasLt curand nvrtc cudart; do
      so=$(find . -maxdepth 1 -name "lib$l.so.*" ! -name '*alt*' | sort | head -1)
      [ -n "$so" ] || die "lib$l.so.* missing from the wheels"
      ln -sfn "${so#./}" "lib$l.so"
    done
    # NCCL's wheel unpacks beside the toolkit (nvidia/nccl/lib); cudarc links -lnccl from here.
    if [ -f ../../nccl/lib/libnccl.so.2 ]; then ln -sfn ../../nccl/lib/libnccl.so.2 libnccl.so; fi )
  printf '%s\n' "$stamp" > "$UNZ/.stamp"
fi
ln -sfn "$C" "$ROOT"
[ -f "$ROOT/include/cuda.h" ] || die "$ROOT/include/cuda.h missing"

# 3. link-time stub for libcuda.so.1. Symbols = every cu* fn declared by cudarc 0.9's driver
#    bindings (the cudarc version of the crate's Cargo.lock); all return CUDA_ERROR_NO_DEVICE.
say "3/7 libcuda stub"
LOCK=$(cd "$CRATE" && cargo locate-project --workspace --message-format plain 2>/dev/null | xargs -r dirname)/Cargo.lock
find_sys() {
  local ver
  ver=$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$LOCK" 2>/dev/null || true)
  if [ -n "$ver" ]; then
    find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path "*/cudarc-$ver/src/driver/sys.rs" 2>/dev/null | head -1
  else
    find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -path '*/cudarc-0.9.*/src/driver/sys.rs' 2>/dev/null | sort -V | tail -1
  fi
}
SYS=$(find_sys)
if [ -z "$SYS" ]; then (cd "$CRATE" && cargo fetch -q); SYS=$(find_sys); fi
[ -n "$SYS" ] || die "cudarc 0.9 sources not found in the cargo registry (is cudarc a dependency of $CRATE?)"
echo "symbols from $SYS"
mkdir -p "$C/lib/stubs"
{ echo 'static const char *m = "libcuda stub (no driver)";'
  echo 'int cuGetErrorString(int e, const char **s){*s=m;return 0;}'
  echo 'int cuGetErrorName(int e, const char **s){*s=m;return 0;}'
  grep -oE 'pub fn cu[A-Za-z0-9_]+' "$SYS" | awk '{print $3}' | sort -u \
    | grep -vxE 'cuGetErrorString|cuGetErrorName' | sed 's/.*/int &(void){return 100;}/'
} > "$P/libcuda_stub.c.new"
if ! cmp -s "$P/libcuda_stub.c.new" "$P/libcuda_stub.c" || [ ! -f "$C/lib/stubs/libcuda.so" ]; then
  mv "$P/libcuda_stub.c.new" "$P/libcuda_stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$C/lib/stubs/libcuda.so" "$P/libcuda_stub.c"
else
  rm -f "$P/libcuda_stub.c.new"
fi
echo "$(grep -c '^int ' "$P/libcuda_stub.c") stub symbols -> $C/lib/stubs/libcuda.so"

# 4. dfdx's build.rs runs `nvidia-smi` BEFORE it reads CUDA_COMPUTE_CAP: provide a fake one
say "4/7 fake nvidia-smi (compute_cap ${CAP%?}.${CAP: -1})"
mkdir -p "$P/fakebin"
printf '#!/bin/sh\necho compute_cap\necho %s\n' "${CAP%?}.${CAP: -1}" > "$P/fakebin/nvidia-smi"
chmod +x "$P/fakebin/nvidia-smi"

# 5. build
say "5/7 cargo build --release ${FEATURES:+--features $FEATURES }--bin $BIN  (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
export CUDA_ROOT=$ROOT CUDA_COMPUTE_CAP=$CAP PATH=$ROOT/bin:$P/fakebin:$PATH
nvcc --version | tail -2
feat=(); [ -n "$FEATURES" ] && feat=(--features "$FEATURES")
(cd "$CRATE" && nice -n "$NICE" cargo build --release ${feat[@]+"${feat[@]}"} --bin "$BIN") \
  || die "cargo build failed"
EXE=$CARGO_TARGET_DIR/release/$BIN
[ -x "$EXE" ] || die "built binary not found: $EXE"

# 6. package. dfdx's NVRTC-compiled kernels (reshape of non-contiguous tensors, concat, stack,
#    to_dtype) #include files from two paths baked in at build time: $CUDA_ROOT/include
#    (cuda_fp16.h{,pp}) and dfdx's OUT_DIR (*.cuh). Ship those files at the same absolute paths.
say "6/7 packing $DIST"
re() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'; }
mapfile -t outs < <(grep -aoE "$(re "$CARGO_TARGET_DIR")/release/build/dfdx-[0-9a-f]+/out" "$EXE" | sort -u)
if [ "${#outs[@]}" -eq 1 ]; then
  OUT=${outs[0]}
else
  # OUT_DIR not (or more than once) in the binary: take the newest dfdx build output that has kernels
  OUT=$(find "$CARGO_TARGET_DIR/release/build" -maxdepth 2 -path '*/dfdx-*/out' -type d -printf '%T@ %p\n' 2>/dev/null \
        | sort -rn | while read -r _ d; do ls "$d"/*.cuh >/dev/null 2>&1 && { echo "$d"; break; }; done)
  echo "note: ${#outs[@]} dfdx OUT_DIR strings in the binary; using the newest: $OUT"
fi
if [ -z "$OUT" ] || ! ls "$OUT"/*.cuh >/dev/null 2>&1; then die "dfdx OUT_DIR with *.cuh not found under $CARGO_TARGET_DIR/release/build"; fi
grep -aqF "$ROOT/include" "$EXE" || echo "note: $ROOT/include is not referenced by the binary (no NVRTC concat/stack kernels?)"

rm -rf -- "$DIST"; mkdir -p "$DIST"
SHIP=$CARGO_TARGET_DIR/release/$BIN.dist     # the binary as shipped (stripped), before compression
case $STRIP in
  debug) strip --strip-debug -o "$SHIP" "$EXE" ;;
  all)   strip --strip-all -o "$SHIP" "$EXE" ;;
  none)  cp "$EXE" "$SHIP" ;;
esac
if [ "$PACK" = gz ]; then gzip -9 -n -c "$SHIP" > "$DIST/$BIN.gz"; else cp "$SHIP" "$DIST/$BIN"; fi
tar -czPf "$DIST/rt-include.tar.gz" "$ROOT/include/cuda_fp16.h" "$ROOT/include/cuda_fp16.hpp" "$OUT"/*.cuh
cat > "$DIST/run-on-gpu.sh" <<'EOF'
#!/usr/bin/env bash
# usage: ./run-on-gpu.sh ./siamlab ARGS...   (on the GPU machine; no Rust, no network needed)
# Unpacks the CUDA headers NVRTC needs at the absolute paths baked into the binary, points
# LD_LIBRARY_PATH at CUDA 13 user-space libs (CUDA_LIBS=dir overrides), then execs ARGS.
set -euo pipefail
H=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 PROGRAM [ARGS...]" >&2; exit 2; }
tar -xzPf "$H/rt-include.tar.gz"   # recreates the baked include paths (cuda_fp16.h, dfdx *.cuh)
# CUDA 13 libs: the torch cu130 venv (site-packages/nvidia/cu13/lib), else any libcublas.so.13, else the toolkit
L=${CUDA_LIBS:-$("${PYTHON:-python3}" -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))' 2>/dev/null || true)}
if [ ! -e "$L/libcublas.so.13" ]; then
  f=$(find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -name libcublas.so.13 -print 2>/dev/null | head -1 || true)
  if [ -n "$f" ]; then L=$(dirname "$f"); else L=/usr/local/cuda/lib64; fi
fi
# NCCL (a build with the `nccl` feature): the venv's nvidia-nccl wheel, when there is one.
N=$("${PYTHON:-python3}" -c 'import nvidia.nccl,os;print(os.path.join(list(nvidia.nccl.__path__)[0],"lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH=$L${N:+:$N}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "run-on-gpu: CUDA libs from $L" >&2
# dist/ may ship PROGRAM.gz instead of PROGRAM: (re)unpack it when missing or different
if [ -f "$1.gz" ] && ! gzip -dc "$1.gz" | cmp -s - "$1" 2>/dev/null; then
  echo "run-on-gpu: unpacking $1.gz" >&2
  gzip -dc "$1.gz" > "$1.tmp.$$" && chmod +x "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
fi
if [ -f "$1" ] && command -v ldd >/dev/null && ldd "$1" 2>/dev/null | grep -q 'not found'; then
  echo "run-on-gpu: WARNING: unresolved libraries:" >&2; ldd "$1" | grep 'not found' >&2
fi
exec "$@"
EOF
chmod +x "$DIST/run-on-gpu.sh"
for s in scripts/gpu-smoke.sh benches/peer_train.py; do
  if [ -f "$REPO/$s" ]; then cp "$REPO/$s" "$DIST/"; else echo "note: $s missing, not packed"; fi
done
[ -f "$DIST/gpu-smoke.sh" ] && chmod +x "$DIST/gpu-smoke.sh"

# 7. report
say "7/7 report"
SHIPPED=$DIST/$BIN; [ "$PACK" = gz ] && SHIPPED=$DIST/$BIN.gz
echo "binary: $EXE ($(du -h "$EXE" | cut -f1)) -> strip=$STRIP: $(du -h "$SHIP" | cut -f1) -> $SHIPPED ($(du -h "$SHIPPED" | cut -f1))"
echo "NEEDED: $(readelf -d "$SHIP" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
echo "max glibc: $(objdump -T "$SHIP" | grep -oE 'GLIBC_[0-9.]+' | sort -Vu | tail -1)"
echo "dfdx OUT_DIR: $OUT"
echo "PTX: $(find "$OUT" -name '*.ptx' | wc -l) files, $(grep -h '^\.version' "$OUT"/*.ptx | sort -u | tr '\n' ' ')$(grep -h '^\.target' "$OUT"/*.ptx | sort -u | tr '\n' ' ')"
echo "rt-include.tar.gz: $(tar -tzPf "$DIST/rt-include.tar.gz" | wc -l) files"
ls -l "$DIST"
echo "dist: $(du -sh "$DIST" | cut -f1)  ($DIST)"
echo "next: copy $DIST to the GPU machine and run ./gpu-smoke.sh there"
