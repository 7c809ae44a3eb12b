"""A second data set with structure to learn, for the learning-curve comparison (issue 16, part 3).

Writes scikit-learn's bundled copy of the UCI optical-recognition handwritten digits (1,797
scans of digits 0-9 by 43 writers, 8×8 pixels with 17 grey levels; shipped inside the
scikit-learn package, so nothing is downloaded) as a `siamlab ingest folder` tree:
`OUT/{train,test}/<digit>/<index>.png`, upscaled to `--size` px (bilinear, PIL) as RGB. The
split is stratified by digit with a fixed seed: 80% train, 20% test.

    python tools/digits_folder.py OUT [--size 32] [--seed 0]
    siamlab ingest folder --src OUT --out digits

needs: scikit-learn, numpy, pillow
"""
import argparse
import pathlib

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-share", type=float, default=0.2)
    a = ap.parse_args()
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(a.seed)
    out = pathlib.Path(a.out)
    counts = {"train": 0, "test": 0}
    for digit in range(10):
        idx = np.flatnonzero(d.target == digit)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * a.test_share))
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            folder = out / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                grey = (d.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
                img = Image.fromarray(grey, "L").resize((a.size, a.size), Image.BILINEAR).convert("RGB")
                img.save(folder / f"{i:04d}.png")
                counts[split] += 1
    print(f"digits: {counts['train']} train, {counts['test']} test images at {a.size} px in {out}")


if __name__ == "__main__":
    main()
