"""siamlab.Pipeline yields, bit for bit, what the Rust pipeline yields for the same shards,
seed, epoch, rank, world, recipe and batch size (the reference is written by
pipeline/examples/batches_npy.rs)."""

import numpy as np
import pytest

import siamlab
from conftest import rust_batches


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("opts", [
    dict(views="simsiam", n_views=2, batch_size=16, seed=3, epoch=1, rank=1, world=2),
    dict(views="simsiam", n_views=3, batch_size=7, seed=11, epoch=4, rank=0, world=1, image_size=24),
    dict(views="eval", n_views=1, batch_size=32, seed=0, epoch=0, rank=2, world=3, drop_last=True),
    dict(views="finetune", n_views=1, batch_size=10, seed=5, epoch=2, rank=0, world=1),
    dict(views="simsiam", n_views=2, batch_size=8, seed=6, epoch=1, rank=1, world=2, shuffle_by="shards"),
])
def test_batches_equal_the_rust_pipeline_bit_for_bit(cifar_shards, tmp_path, opts):
    want = rust_batches(cifar_shards, tmp_path / "rust", workers=2, **opts)
    # another worker count on the Python side: it must not change anything
    got = list(siamlab.Pipeline(cifar_shards, workers=3, **opts))
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert len(g.views) == len(w["views"]) == opts["n_views"]
        for gv, wv in zip(g.views, w["views"]):
            assert gv.dtype == np.float32 and gv.flags.c_contiguous
            assert same_bits(gv, wv)
        assert same_bits(g.labels, w["labels"])
        assert same_bits(g.indices, w["indices"])


def test_resume_from_state_dict_equals_the_rust_resume(cifar_shards, tmp_path):
    opts = dict(batch_size=8, seed=2, epoch=3)
    p = siamlab.Pipeline(cifar_shards, **opts)
    it = iter(p)
    for _ in range(5):
        next(it)
    state = p.state_dict()
    assert state["next_sample"] == 40 and state["epoch"] == 3
    del it
    want = rust_batches(cifar_shards, tmp_path / "rust", start_batch=5, **opts)
    q = siamlab.Pipeline(cifar_shards, batch_size=8)  # seed and epoch come from the state
    q.load_state_dict(state)
    got = list(q)
    assert len(got) == len(want) == len(p) - 5
    for g, w in zip(got, want):
        assert all(same_bits(a, b) for a, b in zip(g.views, w["views"]))
        assert same_bits(g.indices, w["indices"])
