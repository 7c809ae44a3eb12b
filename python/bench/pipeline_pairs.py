"""Pairs/s through `siamlab.Pipeline` from Python, beside the Rust loop (`siamlab bench
pipeline`) on the same shards and torchvision's DataLoader (shared/bench/peer_pipeline_bench.py,
2 workers, v1 transforms), in one sitting, at each size asked for.

    pip install ./python                                # a release build (the default)
    cargo build --release                              # target/release/siamlab
    python python/bench/pipeline_pairs.py --sizes 32 96 --count 10000 --epochs 3 \
        --siamlab target/release/siamlab --peer-python /tmp/peer/bin/python

Both siamlab runs read the same noise-image PNG shards (`siamlab.ingest("random", ...)`,
made once per size under --cache), run the two-view `simsiam` recipe at the images' size with
batch 256 and the same worker count, and count epochs after the first (warm page cache). The
Python loop only takes each batch's views (as a training loop would) and releases them.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import siamlab

REPO = Path(__file__).resolve().parents[2]


def shards(cache, size, count):
    out = Path(cache) / f"random-{size}px-{count}"
    siamlab.ingest("random", out=out, count=count, size=size)  # returns at once when complete
    return out


def python_pairs_per_s(data, epochs, batch, workers):
    p = siamlab.Pipeline(data, batch_size=batch, workers=workers)
    pairs, secs = 0, 0.0
    for epoch in range(epochs):
        p.set_epoch(epoch)
        n, t = 0, time.perf_counter()
        for b in p:
            x1, x2 = b.views
            n += x1.shape[0]
        dt = time.perf_counter() - t
        print(f"  python epoch {epoch}: {n} pairs in {dt:.2f}s = {n / dt:.0f} pairs/s; {p.stats()['bottleneck']}")
        if epoch > 0 or epochs == 1:
            pairs, secs = pairs + n, secs + dt
    return pairs / secs


def rust_pairs_per_s(exe, data, epochs, batch, workers):
    cmd = [exe, "bench", "pipeline", "--data", str(data), "--epochs", str(epochs), "--batch", str(batch),
           "--workers", str(workers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("epoch"):
            print("  rust " + line)
    return float(re.search(r"simsiam: (\d+) samples/s", out).group(1))


def peer_pairs_per_s(python, size, count):
    script = REPO / "shared" / "bench" / "peer_pipeline_bench.py"
    if not script.exists():
        script = Path("/work/shared/bench/peer_pipeline_bench.py")
    out = subprocess.run([python, str(script), str(size), str(count), "2", "v1"], check=True, capture_output=True,
                         text=True).stdout
    print("  " + out.strip())
    return float(re.search(r"pairs_per_s=(\d+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    ap.add_argument("--count", type=int, default=10000, help="images per size")
    ap.add_argument("--epochs", type=int, default=3, help="siamlab epochs (the first is not counted)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--siamlab", default=str(REPO / "target" / "release" / "siamlab"),
                    help="the siamlab binary for the Rust loop ('' to skip)")
    ap.add_argument("--peer-python", default="/tmp/peer/bin/python",
                    help="a Python with torch + torchvision for the peer ('' to skip)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "siamlab-bench"))
    args = ap.parse_args()

    rows = []
    for size in args.sizes:
        print(f"{size} px, {args.count} images, batch {args.batch}, {args.workers} workers")
        data = shards(args.cache, size, args.count)
        py = python_pairs_per_s(data, args.epochs, args.batch, args.workers)
        rust = rust_pairs_per_s(args.siamlab, data, args.epochs, args.batch, args.workers) if args.siamlab else None
        peer = peer_pairs_per_s(args.peer_python, size, args.count) if args.peer_python else None
        rows.append((size, py, rust, peer))

    print("\n| size | siamlab.Pipeline (Python) pairs/s | Rust loop pairs/s | Python overhead | torchvision v1 pairs/s | Python / torchvision |")
    print("|---|---|---|---|---|---|")
    for size, py, rust, peer in rows:
        over = f"{100 * (1 - py / rust):+.1f}%" if rust else "-"
        ratio = f"{py / peer:.1f}x" if peer else "-"
        print(f"| {size} px | {py:,.0f} | {f'{rust:,.0f}' if rust else '-'} | {over} | "
              f"{f'{peer:,.0f}' if peer else '-'} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
