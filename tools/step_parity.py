"""Step-for-step comparison of siamlab's SimSiam training, and of its finetuning, with PyTorch
(issue 16).

siamlab writes what it computed on its first micro-batches with
`siamlab train pretrain|finetune ... --dump-batches N DIR` (trainer/src/dump.rs): the batches exactly as
its pipeline produced them (`batch-NNNNN.npy`), every tensor of the model before the first step
(`init.safetensors`), each optimizer step's accumulated gradients and the tensors after it
(`step-NNNNN.safetensors`) and `dump.json` (configuration, losses, learning rates). This script
builds the same SimSiam model in PyTorch (torchvision / timm backbone, the heads as
`torch.nn.Sequential`s with the same `state_dict` indices), or for a finetuning dump the backbone
with a linear head and its loss against the dumped targets (`targets-NNNNN.npy`; cross-entropy
or BCE-with-logits), loads the initial tensors, runs the
same steps with `torch.optim.Adam` / `torch.optim.SGD` and the same schedule, and compares, per
step: the loss of each micro-batch, the global gradient norm, each tensor's gradient, and every
tensor after the step (parameters and BatchNorm running statistics).

Teacher forcing (the default): each step starts from siamlab's tensors after the previous step,
so differences do not compound and each step is judged on its own; `--free` lets PyTorch run
from the initial weights alone. The PyTorch side computes in float64 (`--fp32` for float32), so
the differences are siamlab's own float32 error.

A difference is relative per tensor: max |siamlab - pytorch| / max |pytorch| over the tensor
("gradients"), or ||siamlab - pytorch|| / ||pytorch|| ("grads L2"; the loss and gradient norm:
|a - b| / |b|); a table cell is the largest over tensors and steps. "fp32 floor" and "fp32 L2"
are the same measures of PyTorch's own float32 gradients against its float64 ones: float32's
rounding (a ReLU whose input is within rounding of zero passes or stops the gradient depending
on the last bit, so single elements can differ by their whole value in any float32 code).
The table's last column asks for 1e-4 on the loss, gradient norm, grads L2, parameters and
buffers.

    python tools/step_parity.py compare DIR [--free] [--fp32]
    python tools/step_parity.py table [--siamlab BIN] [--work DIR] [--only NAME ...] [--steps K]
    python tools/step_parity.py fixture DIR OUT_DIR

`table` makes a small shapes dataset (`siamlab ingest shapes`), runs siamlab for every case,
compares and prints the markdown table (README, "Fidelity"). `fixture` turns a dump into the CI
fixture of trainer/tests/step_parity.rs (PyTorch's free-running values, checksums, the batches).

needs: torch, torchvision, timm, safetensors, numpy (e.g. /tmp/peer/bin/python)
"""
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

torch.set_num_threads(int(os.environ.get("STEP_PARITY_THREADS", "2")))
ROOT = pathlib.Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the model

def resnet18(widths, cifar_stem):
    """torchvision's ResNet-18 without `fc`, with stage widths `widths` (64, 128, 256, 512 for
    the real one) and the CIFAR stem (3×3 conv, stride 1, no max-pool) when asked."""
    import torchvision
    from torchvision.models.resnet import BasicBlock
    m = torchvision.models.resnet18()
    w = widths
    if cifar_stem:
        m.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    else:
        m.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(w[0])
    m.inplanes = w[0]
    m.layer1 = m._make_layer(BasicBlock, w[0], 2)
    m.layer2 = m._make_layer(BasicBlock, w[1], 2, stride=2)
    m.layer3 = m._make_layer(BasicBlock, w[2], 2, stride=2)
    m.layer4 = m._make_layer(BasicBlock, w[3], 2, stride=2)
    m.fc = nn.Identity()
    return m, w[3]


def efficientnet_tiny():
    """siamlab's `efficientnet_tiny` (model/src/backbones/efficientnet.rs) as a timm EfficientNet."""
    from timm.models._efficientnet_builder import decode_arch_def
    from timm.models.efficientnet import EfficientNet
    arch = [["ds_r1_k3_s1_e1_c8_se0.25"], ["ir_r2_k3_s2_e6_c16_se0.25"], ["ir_r1_k5_s2_e6_c24_se0.25"],
            ["ir_r1_k3_s2_e6_c32_se0.25"], ["ir_r1_k5_s1_e6_c32_se0.25"], ["ir_r1_k5_s2_e6_c48_se0.25"],
            ["ir_r1_k3_s1_e6_c64_se0.25"]]
    m = EfficientNet(block_args=decode_arch_def(arch), num_features=128, stem_size=8, num_classes=0,
                     act_layer=nn.SiLU)
    m.conv_stem.stride = (1, 1)
    return m, 128


def backbone(name, size):
    """The PyTorch model of siamlab's preset `name` at `size` px and its feature width."""
    import timm
    if name == "resnet18_tiny":
        return resnet18([8, 16, 32, 64], size <= 96)
    if name in ("resnet18", "resnet18_cifar", "resnet18_imagenet"):
        cifar = name == "resnet18_cifar" or (name == "resnet18" and size <= 96)
        return resnet18([64, 128, 256, 512], cifar)
    if name == "efficientnet_tiny":
        return efficientnet_tiny()
    if name == "vit_tiny" and size == 32:
        return timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=6, mlp_ratio=4, qkv_bias=True,
            num_classes=0), 48
    if name == "pit_tiny" and size == 32:
        m = timm.models.pit.PoolingVisionTransformer(
            img_size=32, patch_size=4, stride=2, base_dims=[8, 8, 8], depth=[1, 1, 1], heads=[2, 4, 8],
            mlp_ratio=4, num_classes=0)
        return m, 64
    raise SystemExit(f"step_parity: no PyTorch model for backbone {name} at {size} px")


class SimSiam(nn.Module):
    """Backbone, projector and predictor with siamlab's `state_dict` keys
    (model/src/simsiam.rs); each view is its own batch, as in the official code."""

    def __init__(self, name, size, dim):
        super().__init__()
        self.backbone, f = backbone(name, size)
        h = dim // 4
        self.projector = nn.Sequential(
            nn.Linear(f, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim), nn.BatchNorm1d(dim))
        self.predictor = nn.Sequential(
            nn.Linear(dim, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, dim))

    def loss(self, x1, x2):
        return self.loss_and_z(x1, x2)[0]

    def loss_and_z(self, x1, x2):
        """The loss and the first view's projection `z1` (for the collapse monitor)."""
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        cos = nn.CosineSimilarity(dim=1)
        return -(cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean()) * 0.5, z1


class Classifier(nn.Module):
    """A backbone and a linear head with siamlab's finetuning `state_dict` keys (`backbone.*`,
    `fc.*`; trainer/src/net.rs) and its losses (trainer/src/head.rs): softmax cross-entropy
    against the one-hot (or soft) targets, mean over the batch; or BCE-with-logits, mean over
    every output."""

    def __init__(self, name, size, classes, loss):
        super().__init__()
        self.backbone, f = backbone(name, size)
        self.fc = nn.Linear(f, classes)
        self.kind = loss

    def loss(self, x, t):
        logits = self.fc(self.backbone(x))
        if self.kind == "bce":
            return nn.functional.binary_cross_entropy_with_logits(logits, t)
        return -(torch.log_softmax(logits, dim=1) * t).sum(dim=1).mean()


def build(doc, dtype=None):
    """The PyTorch model of a dump: SimSiam (pretraining) or Classifier (finetuning)."""
    c = doc["config"]
    cfg = c["config"]
    if is_finetune(doc):
        m = Classifier(cfg["backbone"], cfg["image_size"], c["outputs"], c["loss"])
    else:
        m = SimSiam(cfg["backbone"], cfg["image_size"], cfg["proj_dim"])
    return m.to(dtype) if dtype is not None else m


def is_finetune(doc):
    return "outputs" in doc["config"]


def load_into(model, tensors):
    """Every tensor of `model` from siamlab's (num_batches_tracked excepted)."""
    state = model.state_dict()
    missing = [k for k in state if k not in tensors and not k.endswith("num_batches_tracked")]
    extra = [k for k in tensors if k not in state]
    if missing or extra:
        raise SystemExit(f"step_parity: keys differ: missing {missing[:5]}, unexpected {extra[:5]}")
    with torch.no_grad():
        for k, v in state.items():
            if k in tensors:
                if tuple(tensors[k].shape) != tuple(v.shape):
                    raise SystemExit(f"step_parity: {k} has shape {tuple(tensors[k].shape)}, "
                                     f"PyTorch's {tuple(v.shape)}")
                v.copy_(tensors[k].to(v.dtype))


# ---------------------------------------------------------------- replay

def schedule_lr(s, step):
    """trainer/src/schedule.rs's learning rate of optimizer step `step` (0-based), recomputed."""
    if step < s["warmup"]:
        return s["base_lr"] * (step + 1) / s["warmup"]
    if not s["cosine"]:
        return s["base_lr"]
    span = max(s["total"] - s["warmup"], 1)
    done = step - s["warmup"]
    if s.get("epoch_steps", 0) > 0:  # --cosine-per-epoch: the official code's once-per-epoch cosine
        done -= done % s["epoch_steps"]
    t = min(done / span, 1.0)
    return s["base_lr"] * 0.5 * (1.0 + math.cos(math.pi * t))


# trainer/src/choices.rs: the official code's parameter groups.
FROZEN_PROJECTOR_OUTPUT = ["projector.6.bias", "projector.7.weight", "projector.7.bias"]
PREDICTOR = "predictor."


def param_groups(model, cfg, base_lr):
    """The optimizer's parameter groups as the official code builds them from the run's options:
    `frozen_projector_output` leaves FROZEN_PROJECTOR_OUTPUT out (requires_grad = False),
    `fix_pred_lr` gives the predictor a group of its own at `base_lr` (`fix_lr`), and
    `no_decay_norm_bias` a group without weight decay for biases, normalisation parameters,
    pos_embed and cls_token (timm's rule)."""
    groups = {}
    for n, p in model.named_parameters():
        if cfg.get("frozen_projector_output") and n in FROZEN_PROJECTOR_OUTPUT:
            continue
        fixed = bool(cfg.get("fix_pred_lr")) and n.startswith(PREDICTOR)
        last = n.rsplit(".", 1)[-1]
        no_decay = bool(cfg.get("no_decay_norm_bias")) and (p.ndim <= 1 or last in ("pos_embed", "cls_token"))
        groups.setdefault((fixed, no_decay), []).append(p)
    out = []
    for (fixed, no_decay), params in groups.items():
        g = {"params": params, "fix_lr": fixed, "base_lr": base_lr}
        if no_decay:
            g["weight_decay"] = 0.0
        out.append(g)
    return out


def set_lr(opt, lr):
    """`adjust_learning_rate` of the official code: the schedule's rate, `base_lr` for `fix_lr`."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] if g.get("fix_lr") else lr


def optimizer(params, optim, lr):
    if optim["kind"] == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(optim["betas"]), eps=optim["eps"],
                                weight_decay=optim["weight_decay"])
    return torch.optim.SGD(params, lr=lr, momentum=optim["momentum"], weight_decay=optim["weight_decay"])


def batch(folder, i, dtype):
    return torch.from_numpy(np.load(folder / f"batch-{i:05d}.npy")).to(dtype)


def rel(a, b):
    """max |a - b| / max |b| (a: siamlab, b: PyTorch)."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def l2rel(a, b):
    """||a - b|| / ||b|| (a: siamlab or float32 PyTorch, b: float64 PyTorch): a tensor's relative
    error as a whole, where `rel` is its worst element's against the largest."""
    a, b = a.double(), b.double()
    n = b.norm().item()
    return (a - b).norm().item() / n if n > 0 else (a - b).norm().item()


def grads_of(model, folder, doc, rec, dtype):
    """Loss of each micro-batch of step `rec` and the accumulated gradients, by name."""
    for p in model.parameters():
        p.grad = None
    losses = []
    for i in rec["micros"]:
        x = batch(folder, i, dtype)
        if is_finetune(doc):
            t = torch.from_numpy(np.load(folder / f"targets-{i:05d}.npy")).to(dtype)
            loss = model.loss(x[0], t)
        else:
            loss = model.loss(x[0], x[1])
        (loss * doc["micro"][i]["scale"]).backward()
        losses.append(loss.item())
    return losses, {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def replay(folder, free=False, dtype=torch.float64, floor=False):
    """Runs the dump's steps in PyTorch; yields per step a dict: the record, PyTorch's learning
    rate, losses and gradients (and, with `floor`, the gradients of a float32 PyTorch copy from
    the same tensors: PyTorch's own rounding), PyTorch's tensors after the step, and siamlab's
    tensors before and after it (with its gradients as `grad.NAME`).

    Teacher-forced (not `free`): each step starts from siamlab's tensors, and PyTorch's optimizer
    steps with siamlab's gradients (its moments built from them), so the parameters after the
    step check the optimizer and schedule alone, and the gradients the forward and backward."""
    folder = pathlib.Path(folder)
    doc = json.loads((folder / "dump.json").read_text())
    cfg = doc["config"]["config"]
    torch.manual_seed(0)
    model = build(doc, dtype)
    model32 = build(doc) if floor else None
    before = load_file(folder / "init.safetensors")
    load_into(model, before)
    model.train()
    opt = optimizer(param_groups(model, cfg, doc["config"]["schedule"]["base_lr"]), doc["config"]["optim"], 0.0)
    for rec in doc["steps"]:
        if not free and rec["step"] > 1:
            load_into(model, before)
        lr = schedule_lr(doc["config"]["schedule"], rec["step"] - 1)
        set_lr(opt, lr)
        out = {"rec": rec, "lr": lr, "before": before}
        out["losses"], out["grads"] = grads_of(model, folder, doc, rec, dtype)
        if floor:
            load_into(model32, before)
            model32.train()
            _, out["grads32"] = grads_of(model32, folder, doc, rec, torch.float32)
        after = load_file(folder / f"step-{rec['step']:05d}.safetensors")
        with torch.no_grad():
            # Free-running, the tensors whose gradient is zero in exact arithmetic (see
            # null_tensors) step with siamlab's rounding noise, which Adam scales to a full
            # step: the trajectories stay comparable.
            null = set() if not free else null_tensors(out["grads"])[0]
            out["null"] = sorted(null)
            for n, p in model.named_parameters():
                if not free or n in null:
                    p.grad.copy_(after[f"grad.{n}"].to(dtype))
        opt.step()
        out["after_torch"] = {k: v.detach().clone() for k, v in model.state_dict().items()
                              if not k.endswith("num_batches_tracked")}
        out["after"] = after
        out["doc"] = doc
        yield out
        before = {k: v for k, v in after.items() if not k.startswith("grad.")}


NULL = 1e-6


def buffer_rel(k, a, b):
    """A running variance: relative; a running mean: against the feature's running std (a mean
    that is zero in exact arithmetic, as behind a bias-free layer on centred inputs, has no
    relative precision)."""
    if k.endswith("running_mean"):
        std = b[k[:-len("running_mean")] + "running_var"].double().sqrt().max().item()
        return (a[k].double() - b[k].double()).abs().max().item() / std
    return rel(a[k], b[k])


def null_tensors(grads):
    """Tensors whose gradient is zero in exact arithmetic (PyTorch's float64 gradient below
    NULL of the largest): a bias just before a BatchNorm (`projector.6.bias`) and the shift of
    a BatchNorm whose output only reaches the loss through another BatchNorm's batch statistics
    (`projector.7.bias`: the predictor's first BatchNorm removes any constant shift of z). Their
    float32 gradient is rounding noise, which Adam scales to a full step; they are compared by
    how small siamlab's gradient is, not value by value."""
    top = max(g.abs().max().item() for g in grads.values())
    return {k for k, g in grads.items() if g.abs().max().item() < NULL * top}, top


def compare(folder, free=False, dtype=torch.float64, verbose=True):
    """Per-step and overall largest relative differences of a dump against PyTorch."""
    cols = ["loss", "grad norm", "gradients", "fp32 floor", "grads L2", "fp32 L2", "parameters", "buffers", "update",
            "null grads", "lr"]
    worst = {c: 0.0 for c in cols}
    steps = 0
    nulls = set()
    for o in replay(folder, free, dtype, floor=not free):
        rec, lr, losses, grads, after_torch, before, after, doc = (
            o["rec"], o["lr"], o["losses"], o["grads"], o["after_torch"], o["before"], o["after"], o["doc"])
        steps += 1
        null, top = null_tensors(grads)
        nulls |= null
        row = {"lr": abs(rec["lr"] - lr) / lr if lr else abs(rec["lr"])}
        # The loss is a mean cosine in [-1, 1]: its difference is absolute.
        row["loss"] = max(abs(doc["micro"][i]["loss"] - l) for i, l in zip(rec["micros"], losses))
        gs = {k: after[f"grad.{k}"] for k in grads}
        n_s = math.sqrt(sum(float((g.double() ** 2).sum()) for g in gs.values()))
        n_t = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
        row["grad norm"] = abs(n_s - n_t) / n_t
        gr = {k: rel(gs[k], grads[k]) for k in grads if k not in null}
        row["gradients"] = max(gr.values())
        if "grads32" in o:
            row["fp32 floor"] = max(rel(o["grads32"][k], grads[k]) for k in grads if k not in null)
            row["grads L2"] = max(l2rel(gs[k], grads[k]) for k in grads if k not in null)
            row["fp32 L2"] = max(l2rel(o["grads32"][k], grads[k]) for k in grads if k not in null)
        row["null grads"] = max((gs[k].abs().max().item() / top for k in null), default=0.0)
        trainable = set(grads)
        pr = {k: rel(after[k], after_torch[k]) for k in after_torch if k in trainable and k not in null}
        br = {k: buffer_rel(k, after, after_torch) for k in after_torch if k not in trainable}
        row["parameters"] = max(pr.values())
        row["buffers"] = max(br.values()) if br else 0.0
        ur = {k: rel(after[k].double() - before[k].double(), after_torch[k].double() - before[k].double())
              for k in trainable if k not in null}
        row["update"] = max(ur.values())
        for k, v in row.items():
            worst[k] = max(worst[k], v)
        if verbose:
            print(f"step {rec['step']:>3}  lr {rec['lr']:.3e}  " +
                  "  ".join(f"{k} {row[k]:.1e}" for k in cols if k != "lr") +
                  f"   worst: grad {max(gr, key=gr.get)}, param {max(pr, key=pr.get)}, "
                  f"update {max(ur, key=ur.get)}", flush=True)
    if verbose and nulls:
        print(f"zero-gradient tensors (compared by size, not value): {', '.join(sorted(nulls))}")
    return worst, steps


# ---------------------------------------------------------------- cases, table, fixture

# name, backbone, image size, optimizer, accum, batch, steps, extra flags
CASES = [
    ("resnet18_tiny adam accum 1", "resnet18_tiny", 32, "adam", 1, 16, 20, []),
    ("resnet18_tiny adam accum 4", "resnet18_tiny", 32, "adam", 4, 16, 20, []),
    ("resnet18_tiny sgd accum 1", "resnet18_tiny", 32, "sgd", 1, 16, 20, []),
    ("resnet18_tiny sgd accum 4", "resnet18_tiny", 32, "sgd", 4, 16, 20, []),
    ("efficientnet_tiny adam accum 1", "efficientnet_tiny", 32, "adam", 1, 16, 20, []),
    ("vit_tiny adam accum 1", "vit_tiny", 32, "adam", 1, 16, 20, []),
    ("pit_tiny adam accum 1", "pit_tiny", 32, "adam", 1, 16, 20, []),
    ("resnet18 adam accum 1", "resnet18", 32, "adam", 1, 16, 3, []),
    # The official code's choices (README "Fidelity"): its parameter groups and schedule.
    ("resnet18_tiny sgd official choices", "resnet18_tiny", 32, "sgd", 1, 16, 20,
     ["--fix-pred-lr", "--frozen-projector-output", "--cosine-per-epoch", "--init-scheme", "simsiam"]),
    ("vit_tiny adam no decay on norms and biases", "vit_tiny", 32, "adam", 1, 16, 20,
     ["--no-decay-norm-bias", "--wd", "0.05"]),
]


# Finetuning (`siamlab train finetune`, Adam 1e-3, weight decay 1e-5): name, backbone, image
# size, loss, batch, steps. BCE runs on the same one-hot targets as cross-entropy (`--loss bce`).
FT_CASES = [
    ("finetune resnet18_tiny cross-entropy", "resnet18_tiny", 32, "ce", 16, 20),
    ("finetune resnet18_tiny BCE", "resnet18_tiny", 32, "bce", 16, 20),
    ("finetune vit_tiny cross-entropy", "vit_tiny", 32, "ce", 16, 20),
]


def siamlab_finetune_dump(bin_, data, out, backbone_, size, loss, batch_, steps, seed=0):
    if (out / "dump.json").exists():
        return
    cmd = [str(bin_), "train", "finetune", "--data", str(data), "--out", str(out / "run"), "--quiet",
           "--backbone", backbone_, "--image-size", str(size), "--loss", loss, "--batch", str(batch_),
           "--epochs", "1", "--workers", "2", "--seed", str(seed), "--dump-batches", str(steps), str(out)]
    subprocess.run(cmd, check=True)


def siamlab_dump(bin_, data, out, backbone_, size, opt, accum, batch_, steps, extra, seed=0):
    if (out / "dump.json").exists():
        return
    cmd = [str(bin_), "train", "pretrain", "--data", str(data), "--out", str(out / "run"), "--quiet",
           "--backbone", backbone_, "--image-size", str(size), "--optimizer", opt, "--accum", str(accum),
           "--batch", str(batch_), "--epochs", "1", "--proj-dim", "128", "--knn-every", "0",
           "--workers", "2", "--seed", str(seed), "--dump-batches", str(steps * accum), str(out)] + extra
    subprocess.run(cmd, check=True)


def table(args):
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    found = [target / p / "siamlab" for p in ("release", "debug") if (target / p / "siamlab").exists()]
    bin_ = pathlib.Path(opt_value(args, "--siamlab", str(found[0] if found else "siamlab")))
    work = pathlib.Path(opt_value(args, "--work", "/tmp/step_parity"))
    steps_override = opt_value(args, "--steps", None)
    only = [args[i + 1] for i, a in enumerate(args) if a == "--only"]
    work.mkdir(parents=True, exist_ok=True)
    data = work / "shapes"
    if not (data / "manifest.json").exists():
        subprocess.run([str(bin_), "ingest", "shapes", "--count", "2000", "--test-count", "100", "--size", "32",
                        "--seed", "0", "--out", str(data)], check=True)
    rows = []
    cases = [(c[0], c[6], lambda out, k, c=c: siamlab_dump(bin_, data, out, *c[1:6], k, c[7])) for c in CASES]
    cases += [(c[0], c[5], lambda out, k, c=c: siamlab_finetune_dump(bin_, data, out, *c[1:5], k)) for c in FT_CASES]
    for name, steps, run in cases:
        if only and not any(o in name for o in only):
            continue
        steps = int(steps_override) if steps_override else steps
        out = work / name.replace(" ", "_")
        run(out, steps)
        print(f"## {name}", flush=True)
        worst, n = compare(out)
        rows.append((name, n, worst))
    cols = ["loss", "grad norm", "gradients", "fp32 floor", "grads L2", "fp32 L2", "parameters", "buffers", "update",
            "null grads"]
    print()
    print("| case | steps | " + " | ".join(cols) + " | ≤ 1e-4 |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for name, n, w in rows:
        ok = all(w[c] <= 1e-4 for c in ["loss", "grad norm", "grads L2", "parameters", "buffers"])
        print(f"| {name} | {n} | " + " | ".join(f"{w[c]:.1e}" for c in cols) + f" | {'yes' if ok else 'NO'} |")


def probe(values):
    """Σ v_i · sin(0.7 i + 0.3) over the flattened tensor (trainer/tests/step_parity.rs repeats it)."""
    v = values.double().reshape(-1)
    w = torch.sin(0.7 * torch.arange(v.numel(), dtype=torch.float64) + 0.3)
    return float((v * w).sum())


def summary(t):
    t = t.double()
    return [float(t.norm()), probe(t)]


def fixture(folder, out):
    """The CI fixture, teacher-forced like `compare`: siamlab's configuration, checksums of its
    initial tensors (so the test knows its initialisation is the one PyTorch started from), the
    batches, and per step PyTorch's values at siamlab's tensors before the step: the loss of each
    micro-batch and the summaries (norm, probe) of each gradient in float64 and in float32 (the
    test allows a tensor the larger of 1e-4 and three times float32's own difference), and the
    summaries of every tensor after torch.optim's step with siamlab's gradients."""
    folder, out = pathlib.Path(folder), pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = json.loads((folder / "dump.json").read_text())
    init = load_file(folder / "init.safetensors")
    steps = []
    for o in replay(folder, free=False, floor=True):
        rec, lr, losses, grads, after_torch = o["rec"], o["lr"], o["losses"], o["grads"], o["after_torch"]
        null, _ = null_tensors(grads)
        steps.append({
            "step": rec["step"], "lr": lr, "micros": rec["micros"],
            "scales": [doc["micro"][i]["scale"] for i in rec["micros"]],
            "losses": losses,
            "grad_norm": math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values())),
            "null": sorted(null),
            "grads": {k: summary(g) for k, g in grads.items()},
            "grads32": {k: summary(g) for k, g in o["grads32"].items()},
            "after": {k: summary(v) for k, v in after_torch.items()},
        })
        for i in rec["micros"]:
            shutil.copy(folder / f"batch-{i:05d}.npy", out / f"batch-{i:05d}.npy")
            if is_finetune(doc):
                shutil.copy(folder / f"targets-{i:05d}.npy", out / f"targets-{i:05d}.npy")
    c = doc["config"]
    expected = {
        "backbone": c["config"]["backbone"], "image_size": c["config"]["image_size"],
        "seed": c["config"]["seed"], "optim": c["optim"],
        "init": {k: summary(v) for k, v in init.items()},
        "steps": steps,
    }
    if is_finetune(doc):
        expected.update({"task": "finetune", "loss": c["loss"], "outputs": c["outputs"]})
    else:
        expected["proj_dim"] = c["config"]["proj_dim"]
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out}: {len(steps)} steps, {sum(f.stat().st_size for f in out.iterdir())} bytes")


def opt_value(args, flag, default):
    return args[args.index(flag) + 1] if flag in args else default


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    if args[0] == "compare":
        worst, n = compare(args[1], free="--free" in args, dtype=torch.float32 if "--fp32" in args else torch.float64)
        print(f"{n} steps; largest relative differences: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    elif args[0] == "table":
        table(args[1:])
    elif args[0] == "fixture":
        fixture(args[1], args[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
