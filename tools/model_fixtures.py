"""Regenerate the PyTorch reference fixtures of the siamlab-model ops.

Writes model/tests/fixtures/{conv2d,pool,elementwise}.json: for each case the inputs, a fixed
upstream gradient r, the output y and the gradients of sum(r * y) with respect to every input,
all computed by PyTorch in float64. The Rust tests (model/tests/ops/fixtures.rs) replay them in
f64 and f32; CI never runs this script.

And model/tests/fixtures/backbones.json: torchvision / timm backbones (no classifier) whose
every state_dict entry is filled by a formula of its key (see `fill`), run in eval mode in
float64 on a formula input; the case holds the keys with their shapes and the output features.
model/tests/backbones/fixtures.rs fills the Rust backbones by the same formula, so the keys and
the numbers are both checked.

usage: python tools/model_fixtures.py [OUT_DIR] [--only NAME]
       (default OUT_DIR: model/tests/fixtures next to tools/; NAME: conv2d, pool, elementwise,
       backbones)
needs: torch, torchvision, timm (e.g. /tmp/peer/bin/python)
"""
import json
import pathlib
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(20241128)
DT = torch.float64


def t(shape):
    return torch.randn(*shape, dtype=DT)


def enc(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().reshape(-1)]}


def run(fn, inputs, params):
    """Evaluates fn on leaf copies of inputs; returns the case dict."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = fn(**leaves)
    r = t(y.shape)
    (y * r).sum().backward()
    case = dict(params)
    case.update({k: enc(v) for k, v in inputs.items()})
    case["r"] = enc(r)
    case["y"] = enc(y)
    case.update({f"grad_{k}": enc(v.grad) for k, v in leaves.items()})
    return case


def conv_case(n, c, h, w, o, k, stride, padding, groups, bias):
    inputs = {"x": t((n, c, h, w)), "weight": t((o, c // groups, k, k))}
    if bias:
        inputs["bias"] = t((o,))

    def fn(x, weight, bias=None):
        return F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)

    return run(fn, inputs, {"stride": stride, "padding": padding, "groups": groups})


def conv_cases():
    return {
        # ResNet basic block conv, with bias to cover the fused bias.
        "k3_s1_p1_bias": conv_case(2, 4, 7, 6, 5, 3, 1, 1, 1, True),
        # ResNet stage transition.
        "k3_s2_p1": conv_case(2, 4, 7, 7, 6, 3, 2, 1, 1, False),
        # ResNet downsample shortcut.
        "k1_s2_p0": conv_case(2, 4, 7, 7, 6, 1, 2, 0, 1, False),
        # 1x1 pointwise (MBConv expand / project).
        "k1_s1_p0_bias": conv_case(3, 4, 5, 5, 8, 1, 1, 0, 1, True),
        # ImageNet stem shape (7x7 stride 2 padding 3).
        "k7_s2_p3": conv_case(1, 3, 11, 9, 4, 7, 2, 3, 1, False),
        # Grouped convolution.
        "k3_s1_p1_g2": conv_case(2, 4, 6, 6, 6, 3, 1, 1, 2, False),
        # Depthwise 5x5 stride 2 (EfficientNet).
        "dw_k5_s2_p2": conv_case(2, 4, 9, 9, 4, 5, 2, 2, 4, False),
        # Depthwise 3x3 stride 1 with bias.
        "dw_k3_s1_p1_bias": conv_case(2, 3, 6, 5, 3, 3, 1, 1, 3, True),
        # PiT pooling: groups = in channels, 2 outputs per group, kernel 3 stride 2 padding 1.
        "pit_pool_k3_s2_p1": conv_case(2, 3, 7, 7, 6, 3, 2, 1, 3, True),
        # Patch embedding (ViT): kernel = stride = 4.
        "patch_k4_s4_bias": conv_case(2, 3, 8, 8, 5, 4, 4, 0, 1, True),
    }


def pool_cases():
    def maxp(k, s, p):
        return lambda x: F.max_pool2d(x, k, s, p)

    def avgp(k, s, p, include):
        return lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=include)

    def case(fn, shape, **params):
        return run(fn, {"x": t(shape)}, params)

    return {
        "max_k3_s2_p1": case(maxp(3, 2, 1), (2, 3, 9, 8), kernel=3, stride=2, padding=1),
        "max_k2_s2_p0": case(maxp(2, 2, 0), (2, 3, 6, 7), kernel=2, stride=2, padding=0),
        "avg_k3_s1_p1": case(avgp(3, 1, 1, True), (2, 3, 6, 5), kernel=3, stride=1, padding=1,
                             count_include_pad=True),
        "avg_k3_s2_p1_exclude": case(avgp(3, 2, 1, False), (2, 3, 7, 6), kernel=3, stride=2,
                                     padding=1, count_include_pad=False),
        "avg_k2_s2_p0": case(avgp(2, 2, 0, True), (2, 3, 6, 6), kernel=2, stride=2, padding=0,
                             count_include_pad=True),
        "global_avg": case(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), (3, 4, 5, 3)),
    }


def elementwise_cases():
    return {
        "silu": run(lambda x: F.silu(x), {"x": t((2, 3, 4, 5)) * 3}, {}),
        "scale_channels": run(lambda x, s: x * s[:, :, None, None],
                              {"x": t((2, 3, 4, 5)), "s": t((2, 3))}, {}),
        "gelu": run(lambda x: F.gelu(x), {"x": t((2, 3, 4, 5)) * 3}, {}),
        "residual_add_relu": run(lambda x, s: F.relu(x + s), {"x": t((2, 3, 4, 5)), "s": t((2, 3, 4, 5))}, {}),
        "scaled_softmax": run(lambda x: torch.softmax(x * 0.35, dim=-1), {"x": t((2, 3, 7)) * 4}, {"scale": 0.35}),
    }


def fnv1a(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h


def fill(name, shape):
    """The value of every state_dict entry, from its key: s = sin(phase(key) + 0.61 i)."""
    n = 1
    for d in shape:
        n *= d
    phase = (fnv1a(name) % 10007) * 1e-3
    s = torch.sin(phase + 0.61 * torch.arange(n, dtype=DT))
    if name.endswith("running_var"):
        v = 0.75 + 0.25 * s
    elif name.endswith("running_mean") or name.endswith("bias"):
        v = 0.1 * s
    elif name.endswith("weight") and len(shape) == 1:
        v = 1.0 + 0.1 * s
    elif name.endswith("weight"):
        v = s * (3.0 / (n // shape[0])) ** 0.5
    else:
        v = 0.1 * s
    return v.reshape(shape)


def backbone_case(rust, model, size, batch=2):
    model = model.double().eval()
    keys = []
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            value.copy_(fill(name, list(value.shape)))
            keys.append({"name": name, "shape": list(value.shape)})
        n = batch * 3 * size * size
        x = torch.sin(0.37 * torch.arange(n, dtype=DT) + 0.1).reshape(batch, 3, size, size)
        y = model(x)
    return {"rust": rust, "size": size, "keys": keys, "y": enc(y)}


def backbone_cases():
    import timm
    import torch.nn as nn
    import torchvision

    cifar = torchvision.models.resnet18()
    cifar.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    cifar.maxpool = nn.Identity()
    cifar.fc = nn.Identity()
    imagenet = torchvision.models.resnet18()
    imagenet.fc = nn.Identity()
    effnet = timm.create_model("efficientnet_b0", num_classes=0)
    effnet.conv_stem.stride = (1, 1)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=6, mlp_ratio=4,
        qkv_bias=True, num_classes=0)
    pit = timm.models.pit.PoolingVisionTransformer(
        img_size=32, patch_size=4, stride=2, base_dims=[8, 8, 8], depth=[1, 1, 1],
        heads=[2, 4, 8], mlp_ratio=4, num_classes=0)
    return {
        "resnet18_cifar": backbone_case("ResNet18Cifar", cifar, 32),
        "resnet18_imagenet": backbone_case("ResNet18", imagenet, 64),
        "efficientnet_b0_s1": backbone_case("EfficientNetB0S1", effnet, 32),
        "vit_tiny_32": backbone_case("VitTiny32", vit, 32),
        "pit_tiny_32": backbone_case("PitTiny32", pit, 32),
    }


def main():
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i:i + 2]
    out = pathlib.Path(args[0]) if args else \
        pathlib.Path(__file__).resolve().parent.parent / "model" / "tests" / "fixtures"
    out.mkdir(parents=True, exist_ok=True)
    makers = [("conv2d", conv_cases), ("pool", pool_cases), ("elementwise", elementwise_cases),
              ("backbones", backbone_cases)]
    for name, make in makers:
        if only is not None and name != only:
            continue
        cases = make()
        doc = {"generator": "tools/model_fixtures.py", "torch": torch.__version__,
               "dtype": "float64"}
        if name != "backbones":
            doc["loss"] = "sum(r * y)"
        doc["cases"] = cases
        path = out / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
        tmp.replace(path)
        print(f"wrote {path} ({len(cases)} cases, {path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
