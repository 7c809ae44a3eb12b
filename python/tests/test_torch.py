"""siamlab.torch: the pipeline as a torch IterableDataset (runs where torch is installed; CI
installs only numpy and pytest, so there these tests are skipped)."""

import numpy as np
import pytest

import siamlab

torch = pytest.importorskip("torch")


def test_dataloader_yields_the_pipeline_batches_as_tensors(cifar_shards):
    from siamlab.torch import IterableDataset

    ds = IterableDataset(cifar_shards, batch_size=16, seed=3, epoch=1)
    assert len(ds) == 7
    loader = torch.utils.data.DataLoader(ds, batch_size=None)
    want = list(siamlab.Pipeline(cifar_shards, batch_size=16, seed=3, epoch=1))
    got = list(loader)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        assert set(g) == {"views", "labels", "indices"}
        assert g["views"][0].dtype == torch.float32 and g["labels"].dtype == torch.int64
        for gv, wv in zip(g["views"], w.views):
            assert np.array_equal(gv.numpy().view(np.uint32), wv.view(np.uint32))
        assert torch.equal(g["indices"], torch.from_numpy(w.indices))


def test_tensors_share_the_pipeline_buffers(cifar_shards):
    from siamlab.torch import IterableDataset

    item = next(iter(IterableDataset(cifar_shards, batch_size=8, rank=1, world=2)))
    t = item["views"][0]
    assert t.is_contiguous() and t.numpy().base is not None  # a view, not a copy


def test_rank_and_world_come_from_torch_distributed(cifar_shards, monkeypatch):
    import torch.distributed as dist
    from siamlab.torch import IterableDataset

    assert "rank=0, world=1" in repr(IterableDataset(cifar_shards, batch_size=8).pipeline)
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    ds = IterableDataset(cifar_shards, batch_size=8)
    assert "rank=1, world=3" in repr(ds.pipeline)
    want = [b.indices for b in siamlab.Pipeline(cifar_shards, batch_size=8, rank=1, world=3)]
    assert [torch.equal(x["indices"], torch.from_numpy(w)) for x, w in zip(ds, want)] == [True] * len(want)
    with pytest.raises(ValueError, match="both rank and world"):
        IterableDataset(cifar_shards, rank=1)


def test_dataloader_worker_processes_are_refused(cifar_shards):
    from siamlab.torch import IterableDataset

    loader = torch.utils.data.DataLoader(IterableDataset(cifar_shards, batch_size=8), batch_size=None, num_workers=2)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        next(iter(loader))
