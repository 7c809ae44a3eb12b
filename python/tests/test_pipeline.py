"""siamlab.Pipeline's Python face: arrays, lengths, epochs, resume, stats, threads."""

import gc
import json
import time

import numpy as np
import pytest

import siamlab
from conftest import siamlab_threads


def test_batches_hold_every_row_once_with_its_label(cifar_shards):
    p = siamlab.Pipeline(cifar_shards, batch_size=16, seed=1)
    assert len(p) == 7  # 100 rows
    seen = []
    for b in p:
        assert len(b) == len(b.labels) == len(b.indices) <= 16
        assert [v.shape[1:] for v in b.views] == [(3, 32, 32)] * 2
        assert b.labels.dtype == np.int64 and b.indices.dtype == np.int64
        assert b.attributes is None  # CIFAR has no attributes
        assert (b.labels == b.indices % 10).all()
        seen += b.indices.tolist()
    assert sorted(seen) == list(range(100))
    assert seen != list(range(100)), "shuffled"


def test_arrays_are_writable_views_of_the_batch_not_copies(cifar_shards):
    b = next(iter(siamlab.Pipeline(cifar_shards, batch_size=10, workers=1)))
    v = b.views[0]
    assert v.flags.writeable and v.flags.c_contiguous and not v.flags.owndata
    assert b.views[0] is v  # the same array each time: no copy per access
    owner = v.base.obj  # NumPy holds a memoryview of the batch's buffer
    assert isinstance(owner, siamlab._native.BatchBuffer)
    v[0, 0, 0, 0] = 123.0
    assert np.asarray(owner)[0, 0, 0, 0] == 123.0  # same memory


def test_buffers_return_to_the_pool_when_python_releases_them(cifar_shards):
    # 13 batches, 1 worker, prefetch 1: the pool needs at most prefetch + 2 x workers + 1 = 4
    # buffers when each batch is released before the next; keeping them all needs 13.
    def allocated(keep):
        p = siamlab.Pipeline(cifar_shards, batch_size=8, workers=1, prefetch=1, seed=4)
        kept = []
        for b in p:
            if keep:
                kept.append(b)
            else:
                del b
        return p.stats()["buffers_allocated"], len(p)

    released, n = allocated(keep=False)
    held, _ = allocated(keep=True)
    assert n == 13
    assert released <= 5, released
    assert held >= n - 1, held


def test_a_view_kept_alone_keeps_its_memory(cifar_shards):
    p = siamlab.Pipeline(cifar_shards, batch_size=10, workers=1, views="eval", n_views=1, shuffle=False)
    it = iter(p)
    first = next(it).views[0]  # the batch object is gone, the array stays
    copy = first.copy()
    rest = [b for b in it]
    del rest
    gc.collect()
    assert np.array_equal(first, copy)


def test_epochs_reshuffle_and_repeat(cifar_shards):
    p = siamlab.Pipeline(cifar_shards, batch_size=25, seed=7)
    order = lambda: np.concatenate([b.indices for b in p]).tolist()
    e0 = order()
    assert order() == e0, "the same epoch again without set_epoch"
    p.set_epoch(1)
    assert p.epoch == 1
    assert order() != e0


def test_ranks_split_the_epoch(cifar_shards):
    rows = []
    for rank in range(3):
        p = siamlab.Pipeline(cifar_shards, batch_size=8, rank=rank, world=3, seed=2)
        got = [b.indices for b in p]
        assert len(got) == len(p) == 5  # 34 rows each (padded)
        rows += np.concatenate(got).tolist()
    assert len(rows) == 102 and set(rows) == set(range(100))


def test_state_dict_resumes_exactly_mid_epoch_through_json(cifar_shards):
    p = siamlab.Pipeline(cifar_shards, batch_size=12, seed=9, epoch=2)
    full = [b.views[1].copy() for b in p]
    it = iter(p)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(p.state_dict()))
    it.close()
    q = siamlab.Pipeline(cifar_shards, batch_size=12)
    q.load_state_dict(state)
    rest = [b.views[1].copy() for b in q]
    assert len(rest) == len(full) - 3
    assert all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(rest, full[3:]))
    # the next iteration is a whole epoch again
    assert len(list(q)) == len(full)
    with pytest.raises(ValueError, match="batch_size=12"):
        siamlab.Pipeline(cifar_shards, batch_size=10).load_state_dict(state)


def test_stats_name_a_bottleneck(cifar_shards):
    p = siamlab.Pipeline(cifar_shards, batch_size=20, workers=2)
    assert p.stats() == {}
    n = sum(len(b) for b in p)
    s = p.stats()
    assert s["samples"] == n == 100 and s["batches"] == 5 and s["workers"] == 2
    assert s["augment_s"] > 0 and isinstance(s["bottleneck"], str) and s["bottleneck"]


def wait_for_no_threads(timeout=10.0):
    deadline = time.monotonic() + timeout
    while siamlab_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    return siamlab_threads()


def test_breaking_out_early_stops_every_thread(cifar_shards):
    assert wait_for_no_threads() == []
    p = siamlab.Pipeline(cifar_shards, batch_size=4, workers=3, prefetch=2)
    for i, b in enumerate(p):
        if i == 0:
            running = siamlab_threads()
            assert sum(n.startswith("siamlab-augment") for n in running) == 3, running
        if i == 2:
            break
    del b
    assert wait_for_no_threads() == []
    assert p.state_dict()["next_sample"] == 12


def test_an_error_stops_every_thread(cifar_shards, tmp_path):
    import shutil
    data = tmp_path / "copy"
    shutil.copytree(cifar_shards, data)
    p = siamlab.Pipeline(data, batch_size=4, workers=2, shuffle=False)
    last = sorted((data / "train").iterdir())[-1]
    last.unlink()  # after planning: the error arrives in the stream
    with pytest.raises(siamlab.Error, match=last.name):
        for _ in p:
            pass
    assert wait_for_no_threads() == []


def test_shuffle_by_shards_gives_another_order_of_every_row(cifar_shards):
    # (which shards a window holds is tested in Rust; here 100 rows fit in one window)
    p = siamlab.Pipeline(cifar_shards, batch_size=100, seed=4, shuffle_by="shards")
    q = siamlab.Pipeline(cifar_shards, batch_size=100, seed=4, shuffle_by="Shard")  # forgiving
    a, b = [np.concatenate([x.indices for x in it]).tolist() for it in (p, q)]
    assert a == b and sorted(a) == list(range(100))
    assert a != np.concatenate([x.indices for x in siamlab.Pipeline(cifar_shards, batch_size=100, seed=4)]).tolist()
    with pytest.raises(ValueError, match="row-groups or shards"):
        siamlab.Pipeline(cifar_shards, shuffle_by="rows")


def test_bad_settings_raise_value_errors(cifar_shards):
    with pytest.raises(ValueError, match="rank 2 is not in 0..2"):
        siamlab.Pipeline(cifar_shards, rank=2, world=2)
    with pytest.raises(ValueError, match="at least 1"):
        siamlab.Pipeline(cifar_shards, batch_size=0)
    with pytest.raises(ValueError, match="nope"):
        siamlab.Pipeline(cifar_shards, views="nope")


def test_the_gil_is_released_while_a_batch_is_awaited(cifar_shards):
    import threading

    stop, gaps = threading.Event(), []

    def spin():  # records every pause of this thread longer than 1 ms
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            if now - last > 0.001:
                gaps.append((last, now))
            last = now

    # a slow first batch: 100 samples x 2 views upscaled to 256 px by one worker (at 128 px it
    # took 0.05 s on an idle 2-core EPYC, too close to the 0.05 s this test needs)
    p = siamlab.Pipeline(cifar_shards, batch_size=100, workers=1, prefetch=1, image_size=256)
    it = iter(p)
    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.01)
        t0 = time.perf_counter()
        next(it)
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join()
        it.close()  # even when an assertion below fails: no pipeline thread outlives this test
    waited = t1 - t0
    assert waited > 0.05, "the batch came too fast to tell"
    # Holding the GIL while waiting would stop the spinning thread for (almost) the whole wait.
    longest = max([min(b, t1) - max(a, t0) for a, b in gaps if b > t0 and a < t1], default=0.0)
    assert longest < waited / 2, (longest, waited)


def test_ctrl_c_while_a_batch_is_awaited_raises_at_once_and_stops_every_thread(cifar_shards):
    import _thread
    import signal
    import threading

    assert wait_for_no_threads() == []
    # a slow first batch (100 samples x 2 views upscaled to 224 px by one worker), interrupted early
    p = siamlab.Pipeline(cifar_shards, batch_size=100, workers=1, prefetch=1, image_size=224)
    it = iter(p)
    # Python's own Ctrl-C handler, as in a terminal (a background job, e.g. under CI, inherits
    # SIGINT ignored, and then interrupt_main does nothing)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.02, _thread.interrupt_main).start()
        with pytest.raises(KeyboardInterrupt):
            next(it)
    finally:
        signal.signal(signal.SIGINT, old)
    assert p.state_dict()["next_sample"] == 0, "the interrupt waited for the batch"
    assert next(it, None) is None  # the iterator stopped, as after `break`
    assert wait_for_no_threads() == []
