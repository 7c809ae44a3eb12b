"""Regenerate the weight import/export fixtures of siamlab-model (model/tests/weights.rs).

Full-size torchvision `resnet18` and timm `efficientnet_b0`, `vit_small_patch16_224` and
`pit_ti_224` weights are 45 MB and more, so no weights are stored: every state_dict entry is
filled by a formula of its key (`fill` of tools/model_fixtures.py, which the Rust tests repeat),
the input image too, and only key lists and output features are written:

  model/tests/fixtures/weights/keys.json      per PyTorch model: the state_dict keys and shapes of
                                              the headless model (what an export must equal) and
                                              the extra keys of the model with its classifier
                                              (what an import must skip), plus the Python that
                                              builds the headless model
  model/tests/fixtures/weights/features.json  per case: the weights' source model, the siamlab
                                              preset they go into, input size and batch, the
                                              eval-mode features (float64 forward), and which
                                              tensors had to be resampled on the way
  model/tests/fixtures/weights/resample.json  F.interpolate (bicubic, antialias on and off),
                                              timm's resample_abs_pos_embed and
                                              resample_patch_embed on formula inputs

Resampled cases follow timm: ViT weights go through timm's own `checkpoint_filter_fn` (the
function `timm.create_model(..., pretrained=True, img_size=...)` applies: bicubic, antialias,
class token kept; patch kernels by `resample_patch_embed`) or through `dynamic_img_size=True`.
timm does not resample PiT (its filter leaves a FIXME); siamlab applies the same two functions
to PiT's `[1, C, H, W]` position grid and its patch kernel, and so does this script.

    python tools/weights_fixtures.py [OUT_DIR]
    python tools/weights_fixtures.py --check-export DIR

The second form checks siamlab's export against PyTorch: run
`SIAMLAB_EXPORT_CHECK_DIR=DIR cargo test -p siamlab-model --test weights` first; it writes
`NAME.safetensors` (a siamlab backbone exported) and `NAME.json` (the Python that builds the
PyTorch model, the input size, and siamlab's eval-mode features) for each backbone. This loads
each file with `load_state_dict(strict=True)` and prints the max abs difference of the features.

needs: torch, torchvision, timm, safetensors (e.g. /tmp/peer/bin/python)
"""
import json
import pathlib
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_fixtures import fill

DT = torch.float64


def image(batch, size):
    """The input of every case: sin(0.37 i + 0.1) over the flattened [batch, 3, size, size]."""
    n = batch * 3 * size * size
    return torch.sin(0.37 * torch.arange(n, dtype=DT) + 0.1).reshape(batch, 3, size, size)


def flat(x):
    return [float(v) for v in x.detach().reshape(-1)]


def fill_model(model):
    """Every state_dict entry (counters excepted) from its key, in the model's dtype."""
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if not name.endswith("num_batches_tracked"):
                value.copy_(fill(name, list(value.shape)).to(value.dtype))
    return model


# The headless PyTorch models, as Python statements binding `model` (siamlab's export prints
# the same lines, so --check-export runs what a user is told to run).
MODELS = {
    "resnet18": "model = torchvision.models.resnet18(); model.fc = torch.nn.Identity()",
    "resnet18_timm": 'model = timm.create_model("resnet18", num_classes=0)',
    "efficientnet_b0": 'model = timm.create_model("efficientnet_b0", num_classes=0)',
    "vit_small_patch16_224": 'model = timm.create_model("vit_small_patch16_224", num_classes=0)',
    "vit_small_patch4_32": 'model = timm.create_model("vit_small_patch16_224", img_size=32, patch_size=4, '
                           'num_classes=0)',
    "pit_ti_224": 'model = timm.create_model("pit_ti_224", num_classes=0)',
    "pit_ti_patch4_32": 'model = timm.create_model("pit_ti_224", img_size=32, patch_size=4, stride=2, '
                        'num_classes=0)',
}

# The same with their classifiers (what a pretrained file holds).
FULL = {
    "resnet18": "model = torchvision.models.resnet18()",
    "resnet18_timm": 'model = timm.create_model("resnet18")',
    "efficientnet_b0": 'model = timm.create_model("efficientnet_b0")',
    "vit_small_patch16_224": 'model = timm.create_model("vit_small_patch16_224")',
    "vit_small_patch4_32": 'model = timm.create_model("vit_small_patch16_224", img_size=32, patch_size=4)',
    "pit_ti_224": 'model = timm.create_model("pit_ti_224")',
    "pit_ti_patch4_32": 'model = timm.create_model("pit_ti_224", img_size=32, patch_size=4, stride=2)',
}


def build(statement):
    import timm
    import torchvision

    scope = {"torch": torch, "torchvision": torchvision, "timm": timm}
    exec(statement, scope)
    return scope["model"].eval()


def keys_of(model):
    return [[k, list(v.shape)] for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]


def keys_doc():
    out = {}
    for name, statement in MODELS.items():
        headless = keys_of(build(statement))
        full = build(FULL[name]).state_dict()
        names = {k for k, _ in headless}
        extra = [[k, list(v.shape)] for k, v in full.items() if k not in names]
        out[name] = {"python": statement, "keys": headless, "extra": extra}
    if out["resnet18"]["keys"] != out["resnet18_timm"]["keys"]:
        raise SystemExit("torchvision and timm resnet18 keys differ: siamlab's export assumes they agree")
    return out


def features(model, size, batch):
    with torch.no_grad():
        return model.double().eval()(image(batch, size))


def feature_cases():
    from timm.layers import resample_abs_pos_embed, resample_patch_embed
    from timm.models.vision_transformer import checkpoint_filter_fn

    cases = {}

    def case(name, source, rust, model, size, batch, resampled):
        y = features(model, size, batch)
        cases[name] = {"source": source, "rust": rust, "size": size, "batch": batch,
                       "resampled": resampled, "y": flat(y)}
        print(f"  {name}: features {list(y.shape)}, max |y| {y.abs().max().item():.3f}")

    # Same size as the weights: names and arithmetic only.
    case("resnet18_64", "resnet18", "ResNet18", fill_model(build(MODELS["resnet18"])), 64, 2, [])
    # ImageNet weights at CIFAR size: layer4 runs on a 1x1 map (3x3 taps all in the padding).
    case("resnet18_32", "resnet18", "ResNet18", fill_model(build(MODELS["resnet18"])), 32, 2, [])
    case("efficientnet_b0_64", "efficientnet_b0", "EfficientNetB0",
         fill_model(build(MODELS["efficientnet_b0"])), 64, 2, [])
    case("vit_s_224", "vit_small_patch16_224", "VitS224",
         fill_model(build(MODELS["vit_small_patch16_224"])), 224, 1, [])
    case("pit_ti_224", "pit_ti_224", "PitTi224", fill_model(build(MODELS["pit_ti_224"])), 224, 1, [])

    # 224-px ViT-S weights used at 128 px with patch 16: timm's dynamic_img_size resamples the
    # 14x14 position grid to 8x8 on the fly (class token kept).
    import timm
    vit = fill_model(build(MODELS["vit_small_patch16_224"]))
    dynamic = timm.create_model("vit_small_patch16_224", num_classes=0, dynamic_img_size=True).eval()
    dynamic.load_state_dict(vit.state_dict(), strict=True)
    case("vit_s_224_to_128", "vit_small_patch16_224", "VitS128", dynamic, 128, 2, ["pos_embed"])

    # 224-px ViT-S/16 weights into ViT-S/4 at 32 px through timm's checkpoint_filter_fn:
    # position grid 14x14 -> 8x8 and patch kernel 16x16 -> 4x4.
    small = build(MODELS["vit_small_patch4_32"])
    small.load_state_dict(checkpoint_filter_fn(vit.state_dict(), small), strict=True)
    case("vit_s_224_to_32", "vit_small_patch16_224", "VitS32", small, 32, 2,
         ["patch_embed.proj.weight", "pos_embed"])

    # PiT-Ti 224 (patch 16, stride 8, 27x27 grid) into PiT-Ti at 32 px (patch 4, stride 2,
    # 15x15 grid): the same two resamplings by hand (timm's PiT loader has none).
    pit = fill_model(build(MODELS["pit_ti_224"]))
    sd = dict(pit.state_dict())
    pit32 = build(MODELS["pit_ti_patch4_32"])
    target = pit32.state_dict()
    sd["patch_embed.conv.weight"] = resample_patch_embed(
        sd["patch_embed.conv.weight"], list(target["patch_embed.conv.weight"].shape[-2:]),
        interpolation="bicubic", antialias=True)
    sd["pos_embed"] = F.interpolate(sd["pos_embed"], size=tuple(target["pos_embed"].shape[-2:]),
                                    mode="bicubic", align_corners=False, antialias=True)
    pit32.load_state_dict(sd, strict=True)
    case("pit_ti_224_to_32", "pit_ti_224", "PitTi32", pit32, 32, 2,
         ["patch_embed.conv.weight", "pos_embed"])
    return cases


def resample_doc():
    """The resampling primitives on formula inputs: x[i] = sin(0.1 + 0.7 i) rounded to float32;
    F.interpolate in float64, timm's functions as they run (float32 inside)."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    def formula(shape):
        n = 1
        for d in shape:
            n *= d
        return torch.sin(0.1 + 0.7 * torch.arange(n, dtype=DT)).float().reshape(shape)

    interp = []
    for (h, w), (oh, ow) in [((14, 14), (8, 8)), ((14, 14), (12, 12)), ((27, 27), (15, 15)),
                             ((8, 8), (14, 14)), ((5, 7), (3, 9))]:
        for antialias in (True, False):
            # In float64: siamlab resamples in f64, so the two agree to rounding.
            x = formula((1, 3, h, w)).double()
            y = F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False, antialias=antialias)
            interp.append({"channels": 3, "from": [h, w], "to": [oh, ow], "antialias": antialias, "y": flat(y)})
    pos = []
    for grid, new in [(14, 8), (14, 12), (8, 14)]:
        x = formula((1, 1 + grid * grid, 6))
        y = resample_abs_pos_embed(x, new_size=[new, new], num_prefix_tokens=1)
        pos.append({"shape": list(x.shape), "to": [new, new], "y": flat(y)})
    patch = []
    for k, new in [(16, 4), (16, 8), (8, 16)]:
        x = formula((2, 3, k, k))
        y = resample_patch_embed(x, [new, new], interpolation="bicubic", antialias=True)
        patch.append({"shape": list(x.shape), "to": [new, new], "y": flat(y)})
    return {"input": "sin(0.1 + 0.7 i) as float32", "precision": "interpolate float64, timm float32",
            "interpolate": interp, "pos_embed": pos,
            "patch_embed": patch}


def write(path, doc):
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    tmp.replace(path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def check_export(folder):
    from safetensors.torch import load_file

    folder = pathlib.Path(folder)
    metas = sorted(folder.glob("*.json"))
    if not metas:
        raise SystemExit(f"no *.json in {folder}: run the Rust test with SIAMLAB_EXPORT_CHECK_DIR first")
    worst = 0.0
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        model = build(meta["python"])
        state = load_file(str(folder / meta["file"]))
        model.load_state_dict(state, strict=True)
        y = features(model, meta["size"], meta["batch"]).reshape(-1)
        ours = torch.tensor(meta["y"], dtype=DT)
        diff = (y - ours).abs().max().item()
        worst = max(worst, diff)
        print(f"{meta_path.stem}: strict load of {len(state)} tensors ok; {meta['python']}; "
              f"max |y| {y.abs().max().item():.3f}, max abs diff {diff:.2e}")
    if worst > 1e-4:
        raise SystemExit(f"max abs diff {worst:.2e} > 1e-4")


def main():
    args = sys.argv[1:]
    if args[:1] == ["--check-export"]:
        check_export(args[1])
        return
    out = pathlib.Path(args[0]) if args else \
        pathlib.Path(__file__).resolve().parent.parent / "model" / "tests" / "fixtures" / "weights"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"generator": "tools/weights_fixtures.py", "torch": torch.__version__}
    import timm
    import torchvision
    meta.update({"timm": timm.__version__, "torchvision": torchvision.__version__})
    write(out / "keys.json", dict(meta, models=keys_doc()))
    write(out / "resample.json", dict(meta, **resample_doc()))
    write(out / "features.json", dict(meta, dtype="float64 forward, float32 resampling (as timm)",
                                      input="sin(0.37 i + 0.1) over [batch, 3, size, size]",
                                      cases=feature_cases()))


if __name__ == "__main__":
    main()
