"""`siamlab.Pipeline` as a PyTorch `IterableDataset` (this module imports torch; `import
siamlab` alone does not).

    from siamlab.torch import IterableDataset
    ds = IterableDataset("data/cifar10", batch_size=256)
    loader = torch.utils.data.DataLoader(ds, batch_size=None)   # siamlab batches already
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in loader:
            x1, x2 = batch["views"]                            # torch.float32 [B, 3, H, W]

Each item is a dict of tensors sharing the pipeline's buffers: `views` (list), `labels`,
`indices` and, for datasets with attributes, `attributes`. Under `torch.distributed` the rank
and world size come from the process group unless given.
"""

import torch
import torch.utils.data

from . import Pipeline

__all__ = ["IterableDataset"]


def _distributed():
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class IterableDataset(torch.utils.data.IterableDataset):
    """Batches of a `siamlab.Pipeline` (same arguments) as dicts of tensors.

    Use it with `DataLoader(dataset, batch_size=None)` and `num_workers=0` (siamlab has its own
    worker threads; DataLoader worker processes would each read the whole epoch).
    """

    def __init__(self, data, rank=None, world=None, **pipeline_args):
        super().__init__()
        if (rank is None) != (world is None):
            raise ValueError("give both rank and world, or neither (then torch.distributed decides)")
        if rank is None:
            rank, world = _distributed()
        self.pipeline = Pipeline(data, rank=rank, world=world, **pipeline_args)

    def __len__(self):
        return len(self.pipeline)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError(
                "siamlab.torch.IterableDataset: use DataLoader(num_workers=0); siamlab runs its own workers "
                "(Pipeline(workers=...)) and each DataLoader worker would read the whole epoch")
        for batch in self.pipeline:
            item = {
                "views": [torch.from_numpy(v) for v in batch.views],
                "labels": torch.from_numpy(batch.labels),
                "indices": torch.from_numpy(batch.indices),
            }
            if batch.attributes is not None:
                item["attributes"] = torch.from_numpy(batch.attributes)
            yield item

    def set_epoch(self, epoch):
        """As `DistributedSampler.set_epoch`: a new order and new augmentations."""
        self.pipeline.set_epoch(epoch)

    def state_dict(self):
        return self.pipeline.state_dict()

    def load_state_dict(self, state):
        self.pipeline.load_state_dict(state)
