"""siamlab for Python: the streaming SimSiam data pipeline and the ingest step of the
`siamlab` Rust framework, as a package for PyTorch (or any NumPy) users.

    import siamlab
    siamlab.ingest("cifar10", src="cifar-10-binary.tar.gz", out="data/cifar10")
    pipeline = siamlab.Pipeline("data/cifar10", batch_size=256, seed=0)
    for epoch in range(10):
        pipeline.set_epoch(epoch)
        for batch in pipeline:
            x1, x2 = batch.views          # [B, 3, H, W] float32 NumPy arrays, no copy
            labels = batch.labels         # [B] int64, -1 where unlabeled

Batches are those of the Rust pipeline, bit for bit, for the same shards and settings.
`siamlab.torch` (imported on demand) wraps a pipeline as a `torch.utils.data.IterableDataset`.
"""

import json as _json

from ._native import Batch, EpochIterator, Error, Pipeline, __version__
from ._native import ingest as _ingest

__all__ = ["Batch", "EpochIterator", "Error", "Pipeline", "ingest", "__version__"]


def ingest(source, src=None, *, out, shard_size_mb=256.0, resize=None, jobs=None, overwrite=False,
           skip_bad=False, test_count=None, count=None, size=None, seed=None, mean=None, std=None):
    """Converts a source dataset into a shard folder `out`, as `siamlab ingest` does, and
    returns its manifest (a dict: splits with row counts, classes, per-channel mean/std, ...).

    `source` is one of cifar10, cifar100, stl10, celeba, folder (archive or folder `src`),
    random or shapes (generated: `count`, `test_count`, `size`, `seed`, `mean`, `std`).
    An output already complete with the same arguments is returned as it is (pass
    `overwrite=True` to redo it); a bad source raises `siamlab.Error` naming the file and
    record, leaving nothing half-written.
    """
    text = _ingest(source, None if src is None else str(src), out=str(out), shard_size_mb=shard_size_mb,
                   resize=resize, jobs=jobs, overwrite=overwrite, skip_bad=skip_bad, test_count=test_count,
                   count=count, size=size, seed=seed, mean=mean, std=std)
    return _json.loads(text)
