#!/usr/bin/env python3
"""Full-size stand-ins for the publishers' archives, to rehearse an experiment grid.

Writes, under OUT (default `data/`), files in exactly the layouts of ../shared/FORMATS.md and
with the real datasets' sizes and split counts:

  cifar-10-binary.tar.gz   50,000 train (5 files) + 10,000 test 32x32 images, labels 0-9
  stl10_binary.tar.gz      5,000 train + 8,000 test + 100,000 unlabeled 96x96 images, folds
  celeba/                  202,599 178x218 JPEGs, 40 attributes, partition 162,770/19,867/19,962

Their pixels are seeded random blobs plus noise (about as hard to compress and decode as
photos, a little harder) and their labels random: `siamlab ablate experiments/*-cpu.toml`
then runs every step at its real cost, so the wall time is the one to expect, but its
accuracies mean nothing (chance level) and must not be reported as results.

    python tools/stand_in_archives.py [OUT] [--only cifar10,stl10,celeba] [--seed 0]

Needs numpy and Pillow.
"""

import argparse
import io
import os
import shutil
import tarfile
from multiprocessing import Pool

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_SPLITS = (162_770, 19_867, 19_962)


def images(rng, n, h, w, cell):
    """n images (n, h, w, 3) uint8: a random coarse grid of colours, upsampled, plus noise."""
    gh, gw = -(-h // cell), -(-w // cell)
    coarse = rng.integers(0, 256, size=(n, gh, gw, 3), dtype=np.int16)
    up = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :h, :w]
    noise = rng.normal(0, 12, size=up.shape).astype(np.int16)
    return np.clip(up + noise, 0, 255).astype(np.uint8)


def pack(folder, archive):
    with tarfile.open(archive + ".part", "w:gz", compresslevel=1) as t:
        t.add(folder, arcname=os.path.basename(folder))
    os.replace(archive + ".part", archive)
    shutil.rmtree(folder)


def cifar10(out, seed):
    rng = np.random.default_rng([seed, 10])
    d = os.path.join(out, "cifar-10-batches-bin")
    os.makedirs(d, exist_ok=True)
    names = [f"data_batch_{b}.bin" for b in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        x = images(rng, 10_000, 32, 32, 4).transpose(0, 3, 1, 2).reshape(10_000, -1)  # planes R, G, B
        y = rng.integers(0, 10, size=(10_000, 1), dtype=np.uint8)
        np.concatenate([y, x], axis=1).tofile(os.path.join(d, name))
    with open(os.path.join(d, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CIFAR10_CLASSES) + "\n")
    with open(os.path.join(d, "readme.html"), "w") as f:
        f.write("<html>stand-in: random pixels and labels</html>\n")
    pack(d, os.path.join(out, "cifar-10-binary.tar.gz"))


def stl10(out, seed):
    rng = np.random.default_rng([seed, 96])
    d = os.path.join(out, "stl10_binary")
    os.makedirs(d, exist_ok=True)
    for split, n in [("train", 5_000), ("test", 8_000), ("unlabeled", 100_000)]:
        with open(os.path.join(d, f"{split}_X.bin"), "wb") as f:
            for start in range(0, n, 2_000):
                k = min(2_000, n - start)
                # column-major per channel: (n, c, x, y)
                images(rng, k, 96, 96, 8).transpose(0, 3, 2, 1).tofile(f)
        if split != "unlabeled":
            rng.integers(1, 11, size=n, dtype=np.uint8).tofile(os.path.join(d, f"{split}_y.bin"))
    with open(os.path.join(d, "class_names.txt"), "w") as f:
        f.write("\n".join(STL10_CLASSES) + "\n")
    perm = rng.permutation(5_000)
    with open(os.path.join(d, "fold_indices.txt"), "w") as f:
        for k in range(10):
            f.write(" ".join(str(i) for i in perm[k * 1_000 : (k + 1) * 1_000]) + " \n")
    pack(d, os.path.join(out, "stl10_binary.tar.gz"))


def celeba_chunk(args):
    folder, seed, start, stop = args
    rng = np.random.default_rng([seed, 218, start])
    for i, im in zip(range(start, stop), images(rng, stop - start, 218, 178, 16)):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=90)
        with open(os.path.join(folder, f"{i + 1:06}.jpg"), "wb") as f:
            f.write(buf.getvalue())


def celeba(out, seed):
    root = os.path.join(out, "celeba")
    folder = os.path.join(root, "img_align_celeba")
    os.makedirs(folder, exist_ok=True)
    n = sum(CELEBA_SPLITS)
    chunks = [(folder, seed, s, min(s + 2_000, n)) for s in range(0, n, 2_000)]
    with Pool(os.cpu_count()) as p:
        p.map(celeba_chunk, chunks)
    rng = np.random.default_rng([seed, 40])
    prevalence = rng.uniform(0.05, 0.8, size=40)
    attrs = np.where(rng.random((n, 40)) < prevalence, 1, -1)
    with open(os.path.join(root, "list_attr_celeba.txt"), "w") as f:
        f.write(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n")
        for i in range(n):
            f.write(f"{i + 1:06}.jpg " + " ".join(f"{v:>2}" for v in attrs[i]) + "\n")
    part = np.repeat([0, 1, 2], CELEBA_SPLITS)
    with open(os.path.join(root, "list_eval_partition.txt"), "w") as f:
        for i in range(n):
            f.write(f"{i + 1:06}.jpg {part[i]}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="data")
    ap.add_argument("--only", default="cifar10,stl10,celeba")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name in a.only.split(","):
        {"cifar10": cifar10, "stl10": stl10, "celeba": celeba}[name](a.out, a.seed)
        print(f"{name}: written under {a.out}")


if __name__ == "__main__":
    main()
