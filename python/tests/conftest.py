"""Test data made on the spot: CIFAR-10 binary folders (shared/FORMATS.md) with the pattern
`siamlab_datasets::synth` uses, ingested into small multi-shard folders; and the Rust
reference (`pipeline/examples/batches_npy.rs`) that writes the Rust pipeline's batches."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import siamlab

REPO = Path(__file__).resolve().parents[2]


def pixel(i, c, y, x):
    """synth::pixel: the value of image i at channel c, row y, column x."""
    return (i * 7 + c * 50 + y * 3 + x * 5) % 256


def write_cifar10(root, per_file, test=4):
    """cifar-10-batches-bin/ with 5 train files of `per_file` records and a test file."""
    d = Path(root) / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")

    def records(first, n):
        out = bytearray()
        for i in range(first, first + n):
            out.append(i % 10)
            out += ((i * 7 + c * 50 + y * 3 + x * 5) % 256).astype(np.uint8).tobytes()
        return bytes(out)

    for b in range(5):
        (d / f"data_batch_{b + 1}.bin").write_bytes(records(b * per_file, per_file))
    (d / "test_batch.bin").write_bytes(records(0, test))
    names = "airplane automobile bird cat deer dog frog horse ship truck".split()
    (d / "batches.meta.txt").write_text("\n".join(names))
    (d / "readme.html").write_text("<html>synthetic</html>")
    return d


@pytest.fixture(scope="session")
def cifar_shards(tmp_path_factory):
    """100 CIFAR-layout images ingested into shards of about 24 KB (several shards)."""
    root = tmp_path_factory.mktemp("cifar")
    src = write_cifar10(root, 20)
    out = root / "shards"
    siamlab.ingest("cifar10", src=src, out=out, shard_size_mb=24 / 1024)
    return out


def rust_batches(data, out, **opts):
    """Runs the Rust reference on `data` with `opts` (the example's flags) and loads the batches
    it wrote: a list of dicts with `views`, `labels`, `indices`."""
    args = [str(data), str(out)]
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            args.append(flag)
        elif v is not None and v is not False:
            args += [flag, str(v)]
    exe = os.environ.get("SIAMLAB_BATCHES_NPY")
    cmd = [exe] if exe else ["cargo", "run", "--quiet", "-p", "siamlab-pipeline", "--example", "batches_npy", "--"]
    subprocess.run(cmd + args, cwd=REPO, check=True)
    out = Path(out)
    batches = []
    for k in sorted(int(f.name[1:].split("_")[0]) for f in out.glob("b*_labels.npy")):
        views = []
        while (out / f"b{k}_v{len(views)}.npy").exists():
            views.append(np.load(out / f"b{k}_v{len(views)}.npy"))
        batches.append({
            "views": views,
            "labels": np.load(out / f"b{k}_labels.npy"),
            "indices": np.load(out / f"b{k}_indices.npy"),
        })
    return batches


def siamlab_threads():
    """Names of this process's threads started by the pipeline (Linux)."""
    names = []
    for t in Path("/proc/self/task").iterdir():
        try:
            name = (t / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        if name.startswith("siamlab-"):
            names.append(name)
    return names
