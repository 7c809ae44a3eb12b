"""Writes tests/fixtures/cifar_py3_protocol2.pkl: a CIFAR-10 python-version batch of 3 images
with the synthetic pattern of siamlab_datasets::synth (pixel = (i*7 + c*50 + y*3 + x*5) % 256),
pickled by Python 3 + numpy with protocol 2, so the Rust pickle reader is checked against what
numpy really emits (bytes through _codecs.encode). Needs numpy. Run from the repository root:

    python3 tools/cifar_pickle_fixture.py
"""
import pickle

import numpy as np

n = 3
i, c, y, x = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
data = ((i * 7 + c * 50 + y * 3 + x * 5) % 256).astype(np.uint8).reshape(n, 3072)
batch = {b"batch_label": b"fixture", b"labels": [0, 1, 2], b"data": data,
         b"filenames": [b"a.png", b"b.png", b"c.png"]}
with open("tests/fixtures/cifar_py3_protocol2.pkl", "wb") as f:
    pickle.dump(batch, f, protocol=2)
