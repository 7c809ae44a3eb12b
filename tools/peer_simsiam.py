"""SimSiam in PyTorch straight from siamlab's shards, to compare learning curves (issue 16).

`run` trains the PyTorch model tools/step_parity.py builds for a siamlab backbone preset (the
same architecture, PyTorch's default initialisation) on a siamlab shard folder, read with
pyarrow (`manifest.json`, `<split>/part-*.parquet`, the Hugging Face image column), augmented by
torchvision's transforms in a DataLoader: the SimSiam recipe that siamlab's `simsiam` recipe
copies (RandomResizedCrop 0.2-1, ColorJitter 0.4/0.4/0.4/0.1 with p 0.8, RandomGrayscale 0.2,
GaussianBlur above 32 px, horizontal flip, Normalize with the manifest's mean / std). Adam with
L2 weight decay and a cosine set every optimizer step (after `--warmup-epochs` of linear
warmup), `--accum` micro-batches per step, the last incomplete batch dropped; as `siamlab train
pretrain` does. Per epoch it writes a line of `metrics.jsonl` with
siamlab's fields (epoch, step, loss, lr, z_std, knn_top1): the kNN monitor is siamlab's
(frozen backbone features of the train split as the bank, test split queries, cosine
similarity, k 200, votes weighted by exp(sim / 0.1)).

`compare` reads siamlab runs and PyTorch runs (their metrics.jsonl), prints per epoch the mean
and range over seeds of each side's loss and kNN top-1, says where the two means are apart by
more than the seeds' spread, and draws both (`--plot`, needs matplotlib).

`stability` reads runs of either side (run folders or their metrics.jsonl files) and prints a
row per run for the stability study (issue 16 part 4): the final loss, the std of the normalised
projections at the end and at its lowest, as a fraction of the healthy 1/sqrt(D), the epochs
where it was below `--below` of healthy (default 0.4), and the kNN top-1 at the end and at its
best. A run counts as destabilised when any epoch falls below that fraction; the last line gives
the count. `--plot` draws every run's std per epoch with the threshold, a panel per
side (the first word of each `--label`).

    python tools/peer_simsiam.py run DATA --out DIR [--backbone resnet18_tiny] [--epochs 10]
        [--batch 64] [--accum 1] [--lr 5e-4] [--wd 1e-5] [--warmup-epochs 0] [--proj-dim 128]
        [--seed 0] [--workers 2]
        [--pipeline torchvision|torchvision-tensors|siamlab]
    python tools/peer_simsiam.py compare SIAMLAB_RUN... -- PEER_RUN... [--plot curves.png]
    python tools/peer_simsiam.py stability RUN_OR_JSONL... [--below 0.4] [--plot FILE [--label NAME]...]

needs: torch, torchvision, timm, pyarrow, numpy, pillow (matplotlib for --plot)
"""
import argparse
import io
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent


def read_split(data, split):
    """(list of encoded image bytes, int64 labels) of one split of a siamlab shard folder."""
    import pyarrow.parquet as pq
    folder = pathlib.Path(data) / split
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise SystemExit(f"peer_simsiam: no shards in {folder}")
    images, labels = [], []
    for p in parts:
        t = pq.read_table(p)
        images += [row["bytes"] for row in t.column("image").to_pylist()]
        labels += t.column("label").to_pylist() if "label" in t.column_names else [-1] * t.num_rows
    return images, np.array([-1 if v is None else v for v in labels], dtype=np.int64)


class Images:
    """A split as a map-style dataset: decoded PIL images through a transform."""

    def __init__(self, images, labels, transform, views):
        self.images, self.labels, self.transform, self.views = images, labels, transform, views

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        img = Image.open(io.BytesIO(self.images[i])).convert("RGB")
        xs = [self.transform(img) for _ in range(self.views)]
        return (*xs, int(self.labels[i]))


def transforms(size, mean, std, train, tensors=False):
    """torchvision's SimSiam views on PIL images (the official code's way), or with `tensors` on
    uint8 tensors (PILToTensor first; each op then computes as torchvision's tensor kernels)."""
    import torch
    import torchvision.transforms as T
    if tensors:
        norm = [T.ConvertImageDtype(torch.float32), T.Normalize(mean, std)]
    else:
        norm = [T.ToTensor(), T.Normalize(mean, std)]
    if not train:
        return T.Compose([T.Resize(size), T.CenterCrop(size)] + norm)
    aug = [T.RandomResizedCrop(size, scale=(0.2, 1.0)),
           T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
           T.RandomGrayscale(p=0.2)]
    if size > 32:
        k = (size // 10) // 2 * 2 + 1  # siamlab's blur_kernel_for
        aug.append(T.RandomApply([T.GaussianBlur(k, (0.1, 2.0))], p=0.5))
    aug.append(T.RandomHorizontalFlip())
    return T.Compose(([T.PILToTensor()] if tensors else []) + aug + norm)


def features(backbone, loader):
    import torch
    out, labels = [], []
    backbone.eval()
    with torch.no_grad():
        for x, y in loader:
            out.append(backbone(x))
            labels.append(y)
    backbone.train()
    return torch.cat(out), torch.cat(labels)


def knn_top1(bank, bank_labels, queries, query_labels, k=200, t=0.1):
    """siamlab's kNN monitor (trainer/src/knn.rs): cosine similarity, the k most similar bank
    entries vote for their label with weight exp(sim / t)."""
    import torch
    import torch.nn.functional as F
    keep = bank_labels >= 0
    bank, bank_labels = F.normalize(bank[keep], dim=1), bank_labels[keep]
    q = F.normalize(queries, dim=1)
    classes = int(bank_labels.max()) + 1
    sims = q @ bank.T
    top, idx = sims.topk(min(k, bank.shape[0]), dim=1)
    w = ((top - top[:, :1]) / t).exp()
    votes = torch.zeros(q.shape[0], classes, dtype=w.dtype).scatter_add_(1, bank_labels[idx], w)
    return float((votes.argmax(1) == query_labels).double().mean())


def run(a):
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, str(ROOT))
    from step_parity import SimSiam

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)
    manifest = json.loads((pathlib.Path(a.data) / "manifest.json").read_text())
    norm = manifest.get("stats") or {}
    mean, std = norm.get("mean", [0.5] * 3), norm.get("std", [0.25] * 3)
    train_imgs, train_labels = read_split(a.data, "train")
    size = a.image_size or _size(train_imgs[0])
    model = SimSiam(a.backbone, size, a.proj_dim)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.wd)
    if a.pipeline == "siamlab":  # the same model and loop on siamlab's batches: tells augmentation from training
        import siamlab
        pipe = siamlab.Pipeline(a.data, batch_size=a.batch, seed=a.seed, drop_last=True, workers=a.workers)
        steps_per_epoch = len(pipe)

        def batches(epoch):
            pipe.set_epoch(epoch)
            for b in pipe:
                yield torch.from_numpy(b.views[0]), torch.from_numpy(b.views[1])
    else:
        views = transforms(size, mean, std, True, a.pipeline == "torchvision-tensors")
        loader = torch.utils.data.DataLoader(
            Images(train_imgs, train_labels, views, 2), batch_size=a.batch, shuffle=True, drop_last=True,
            num_workers=a.workers, generator=torch.Generator().manual_seed(a.seed), persistent_workers=a.workers > 0)
        steps_per_epoch = len(loader)

        def batches(epoch):
            for x1, x2, _ in loader:
                yield x1, x2

    knn = None
    if a.knn_every > 0:
        test_imgs, test_labels = read_split(a.data, "test")
        ev = transforms(size, mean, std, False)
        mk = lambda im, lb: torch.utils.data.DataLoader(Images(im, lb, ev, 1), batch_size=256)
        knn = (mk(train_imgs, train_labels), mk(test_imgs, test_labels))
    accum = max(a.accum, 1)
    opt_steps = -(-steps_per_epoch // accum)  # trainer/src/schedule.rs's steps_per_epoch
    total = a.epochs * opt_steps
    warmup = math.floor(a.warmup_epochs * opt_steps + 0.5)  # Rust's f64::round
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(vars(a), indent=1))
    metrics = open(out / "metrics.jsonl", "w")
    step = 0
    for epoch in range(a.epochs):
        t0, losses, stds = time.time(), [], []
        opt.zero_grad()
        for micro, (x1, x2) in enumerate(batches(epoch)):
            # trainer/src/schedule.rs: linear warmup, then a cosine per optimizer step; the
            # micro-batches of a step (fewer in an epoch's last group) share it equally.
            if step < warmup:
                lr = a.lr * (step + 1) / warmup
            else:
                lr = a.lr * 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1.0)))
            group_len = min(accum, steps_per_epoch - micro // accum * accum)
            loss, z1 = model.loss_and_z(x1, x2)
            (loss / group_len).backward()
            if (micro + 1) % accum == 0 or micro + 1 == steps_per_epoch:
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.step()
                opt.zero_grad()
                step += 1
            losses.append(loss.item())
            stds.append(float(F.normalize(z1.detach(), dim=1).std(dim=0).mean()))
        rec = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)), "lr": lr,
               "z_std": float(np.mean(stds)), "z_std_healthy": 1 / math.sqrt(a.proj_dim), "knn_top1": None,
               "seconds": time.time() - t0}
        if knn and ((epoch + 1) % a.knn_every == 0 or epoch + 1 == a.epochs):
            bank, bl = features(model.backbone, knn[0])
            q, ql = features(model.backbone, knn[1])
            rec["knn_top1"] = knn_top1(bank, bl, q, ql)
        print(json.dumps(rec), flush=True)
        metrics.write(json.dumps(rec) + "\n")
        metrics.flush()
    metrics.close()


def _size(encoded):
    from PIL import Image
    return Image.open(io.BytesIO(encoded)).size[0]


def load_metrics(run):
    """(path, records) of a run folder's metrics.jsonl, or of a metrics file given directly."""
    path = pathlib.Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    return path, [json.loads(l) for l in open(path) if l.strip()]


def curves(runs):
    """{field: array [runs, epochs]} of the runs' metrics.jsonl (the shortest run's length)."""
    recs = [load_metrics(r)[1] for r in runs]
    n = min(len(r) for r in recs)
    out = {}
    for field in ("loss", "knn_top1", "z_std"):
        vals = [[(r[e].get(field) if r[e].get(field) is not None else float("nan")) for e in range(n)] for r in recs]
        out[field] = np.array(vals, dtype=float)
    return out


def compare(a):
    s, p = curves(a.siamlab), curves(a.peer)
    n = min(s["loss"].shape[1], p["loss"].shape[1])
    print(f"| epoch | siamlab loss, mean (range) over {len(a.siamlab)} runs | PyTorch loss over {len(a.peer)} "
          "| siamlab z std | PyTorch z std | siamlab kNN top-1 % | PyTorch kNN top-1 % "
          "| apart by more than the runs' spread |")
    print("|--:|--:|--:|--:|--:|--:|--:|---|")
    def fmt(v, kind):
        if np.isnan(v).all():
            return "—"
        f = {"loss": "{:+.3f}", "z_std": "{:.4f}", "knn_top1": "{:.1f}"}[kind]
        k = 100 if kind == "knn_top1" else 1
        return f"{f.format(k * np.nanmean(v))} ({f.format(k * np.nanmin(v))} to {f.format(k * np.nanmax(v))})"

    apart_any = False
    for e in range(n):
        notes = []
        for field in ("loss", "z_std", "knn_top1"):
            sv, pv = s[field][:, e], p[field][:, e]
            if np.isnan(sv).all() or np.isnan(pv).all():
                continue
            spread = max(np.nanmax(sv) - np.nanmin(sv), np.nanmax(pv) - np.nanmin(pv))
            if abs(np.nanmean(sv) - np.nanmean(pv)) > spread:
                notes.append(field)
        apart_any |= bool(notes)
        cells = [fmt(c[f][:, e], f) for f in ("loss", "z_std", "knn_top1") for c in (s, p)]
        print(f"| {e} | {' | '.join(cells)} | {', '.join(notes) or 'no'} |")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for ax, field, title in ((axes[0], "loss", "SimSiam loss (epoch mean)"),
                                 (axes[1], "z_std", "std of normalised z (healthy 1/√D)"),
                                 (axes[2], "knn_top1", "kNN top-1")):
            for side, c, color in ((a.siamlab_label, s, "tab:blue"), (a.peer_label, p, "tab:orange")):
                for i, row in enumerate(c[field][:, :n]):
                    ax.plot(range(1, n + 1), row, color=color, alpha=0.8, label=side if i == 0 else None)
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(a.title)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"plot: {a.plot}")
    return 0


def spans(epochs):
    """'23-26, 36-44' of sorted 1-based epoch numbers."""
    out, start, prev = [], None, None
    for e in epochs + [None]:
        if start is not None and (e is None or e != prev + 1):
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if e is not None and start is None:
            start = e
        prev = e
    return ", ".join(out)


def stability(a):
    if a.label and len(a.label) != len(a.runs):
        raise SystemExit(f"peer_simsiam stability: {len(a.label)} --label for {len(a.runs)} runs (give one per run, or none)")
    print(f"| run | epochs | final loss | z std / healthy at the end | lowest (epoch) "
          f"| epochs below {a.below:g} of healthy | kNN top-1 % at the end (best) | destabilised |")
    print("|---|--:|--:|--:|--:|---|--:|---|")
    count, loaded = 0, [load_metrics(run) for run in a.runs]
    for run, (path, recs) in zip(a.runs, loaded):
        if not recs:
            raise SystemExit(f"peer_simsiam stability: {path}: no epochs")
        rel = [r["z_std"] / r["z_std_healthy"] for r in recs]
        low = min(range(len(recs)), key=lambda i: rel[i])
        below = [recs[i]["epoch"] + 1 for i in range(len(recs)) if rel[i] < a.below]
        knn = [r["knn_top1"] for r in recs if r.get("knn_top1") is not None]
        knn_cell = f"{100 * knn[-1]:.1f} ({100 * max(knn):.1f})" if knn else "—"
        count += bool(below)
        print(f"| {run} | {len(recs)} | {recs[-1]['loss']:+.3f} | {rel[-1]:.2f} | {rel[low]:.2f} "
              f"({recs[low]['epoch'] + 1}) | {spans(below) or 'none'} | {knn_cell} | {'yes' if below else 'no'} |")
    print(f"\n{count} of {len(a.runs)} runs fall below {a.below:g} of the healthy std at some epoch.")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        lines = []
        for (path, recs), label in zip(loaded, a.label or [None] * len(a.runs)):
            label = label or (path.parent.name if path.name == "metrics.jsonl" else path.stem)
            lines.append((label, [r["epoch"] + 1 for r in recs], [r["z_std"] / r["z_std_healthy"] for r in recs]))
        # one panel per side: the label's first word ("siamlab seed 2", "PyTorch seed 0")
        groups = list(dict.fromkeys(l[0].split()[0] for l in lines))
        fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), sharey=True, squeeze=False)
        for ax, g in zip(axes[0], groups):
            for label, x, y in lines:
                if label.split()[0] == g:
                    ax.plot(x, y, label=label)
            ax.axhline(a.below, color="black", linestyle="--", linewidth=1, label=f"{a.below:g} of healthy")
            ax.set_xlabel("epoch")
            ax.set_ylim(0, 1.1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(g if len(groups) > 1 else a.title)
        axes[0][0].set_ylabel("std of normalised z / healthy (1/√D)")
        if len(groups) > 1:
            fig.suptitle(a.title)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"plot: {a.plot}")
    return 0


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "stability":
        ap = argparse.ArgumentParser(prog="peer_simsiam.py stability")
        ap.add_argument("runs", nargs="+", help="run folders or metrics.jsonl files, of either side")
        ap.add_argument("--below", type=float, default=0.4,
                        help="a run is destabilised when z std falls below this fraction of 1/sqrt(D)")
        ap.add_argument("--plot", help="draw each run's z std / healthy per epoch (needs matplotlib)")
        ap.add_argument("--label", action="append", help="a run's name in the plot, once per run, in order")
        ap.add_argument("--title", default="std of the normalised projections, one line a run")
        return stability(ap.parse_args(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        argv = sys.argv[2:]
        if "--" not in argv:
            raise SystemExit("peer_simsiam compare: SIAMLAB_RUN... -- PEER_RUN... [--plot FILE]")
        cut = argv.index("--")
        ap = argparse.ArgumentParser(prog="peer_simsiam.py compare")
        ap.add_argument("peer", nargs="+")
        ap.add_argument("--plot")
        ap.add_argument("--title", default="siamlab and PyTorch, one line a run")
        ap.add_argument("--siamlab-label", default="siamlab")
        ap.add_argument("--peer-label", default="PyTorch")
        a = ap.parse_args(argv[cut + 1:])
        a.siamlab = argv[:cut]
        return compare(a)
    ap = argparse.ArgumentParser(prog="peer_simsiam.py run")
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--backbone", default="resnet18_tiny")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--wd", type=float, default=1e-5)
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step (siamlab's --accum)")
    ap.add_argument("--warmup-epochs", type=float, default=0.0)
    ap.add_argument("--proj-dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--knn-every", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pipeline", choices=["torchvision", "torchvision-tensors", "siamlab"], default="torchvision",
                    help="where the views come from: torchvision's transforms on PIL images in a DataLoader (the "
                         "official code's way), the same on uint8 tensors, or siamlab.Pipeline "
                         "(the `siamlab` package; its batches, bit for bit those of `siamlab train pretrain`)")
    run(ap.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
