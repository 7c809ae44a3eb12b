"""SimSiam on siamlab batches with PyTorch: a torchvision ResNet-18 (CIFAR stem) trained for
a few steps on two-view batches streamed by `siamlab.torch.IterableDataset`.

    pip install ./python torch torchvision
    python python/examples/simsiam_torch.py                 # generated shapes, 32 px
    python python/examples/simsiam_torch.py data/cifar10 --steps 50 --batch-size 256

Without a shard folder it first ingests 2,000 generated shape images into a temporary folder.
The loop resumes exactly: it saves the pipeline's state_dict with the model's and, given
`--resume`, continues with the batches that were still to come.
"""

import argparse
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import siamlab
from siamlab.torch import IterableDataset


class SimSiam(nn.Module):
    """Backbone + 3-layer projector + 2-layer predictor (Chen & He, 2021), CIFAR variant."""

    def __init__(self, dim=2048, pred_dim=512):
        super().__init__()
        backbone = torchvision.models.resnet18(num_classes=dim)
        backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # 32 px: 3x3 stem, no max-pool
        backbone.maxpool = nn.Identity()
        prev = backbone.fc.in_features
        backbone.fc = nn.Sequential(
            nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True),
            nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True),
            nn.Linear(prev, dim, bias=False), nn.BatchNorm1d(dim, affine=False))
        self.encoder = backbone
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim))

    def forward(self, x1, x2):
        z1, z2 = self.encoder(x1), self.encoder(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", help="shard folder (default: generated shapes)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="siamlab worker threads (default: all cores)")
    ap.add_argument("--checkpoint", default=None, help="save model + pipeline state here at the end")
    ap.add_argument("--resume", default=None, help="a checkpoint written by --checkpoint")
    args = ap.parse_args()

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = f"{tmp.name}/shapes"
        m = siamlab.ingest("shapes", out=args.data, count=2000, test_count=100, size=32)
        print(f"ingested {m['splits']['train']['rows']} generated images into {args.data}")

    ds = IterableDataset(args.data, batch_size=args.batch_size, workers=args.workers, drop_last=True)
    model = SimSiam()
    opt = torch.optim.SGD(model.parameters(), lr=0.05 * args.batch_size / 256, momentum=0.9, weight_decay=1e-4)
    epoch = 0
    if args.resume:
        ck = torch.load(args.resume)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        ds.load_state_dict(ck["pipeline"])
        epoch = ck["pipeline"]["epoch"]
    loader = torch.utils.data.DataLoader(ds, batch_size=None)

    step, t0 = 0, time.perf_counter()
    model.train()
    while step < args.steps:
        for batch in loader:
            x1, x2 = batch["views"]
            loss = model(x1, x2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            print(f"epoch {epoch} step {step}: loss {loss.item():.4f} ({x1.shape[0] / (time.perf_counter() - t0):.1f} pairs/s)")
            t0 = time.perf_counter()
            if step == args.steps:
                break
        else:
            epoch += 1
            ds.set_epoch(epoch)
    if args.checkpoint:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "pipeline": ds.state_dict()},
                   args.checkpoint)
        print(f"saved {args.checkpoint}")
    print(f"pipeline: {ds.pipeline.stats().get('bottleneck', 'no batch read')}")


if __name__ == "__main__":
    main()
