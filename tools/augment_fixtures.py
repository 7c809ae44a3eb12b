#!/usr/bin/env python3
"""Reference fixtures for siamlab-pipeline's augmentation ops, computed with torchvision.

Reference: torchvision.transforms.functional (v1) on uint8 CHW tensors (its tensor
implementation: float32 arithmetic, truncation back to uint8 after each color op, rounding after
the blur, antialiased bilinear resize).

Writes pipeline/tests/fixtures/augment/: one raw .bin per input image (HWC uint8) and per output
(CHW uint8, or CHW float32 little-endian for normalized outputs), and index.json describing every
case (op, parameters, input, output shape, dtype). The Rust test
pipeline/tests/torchvision_fixtures.rs replays each case and asserts that >= 99% of values are
within 2/255 (on the [0, 1] scale) of torchvision's.

usage: python tools/augment_fixtures.py          (run from the repository root; deterministic)
needs: torch, torchvision (CI never runs this; the fixtures are committed)
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "pipeline", "tests", "fixtures", "augment")


def make_image(w, h, seed):
    """Gradients + a hue wheel + noise, with a gray strip and a saturated block (HWC uint8)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * x / max(w - 1, 1)
    g = 255.0 * y / max(h - 1, 1)
    ang = np.arctan2(y - h / 2, x - w / 2)
    b = 127.5 + 127.5 * np.sin(3 * ang)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 18, size=(h, w, 3))
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    img[h // 3, :, :] = rng.integers(0, 256, size=(w, 1), dtype=np.uint8)  # gray row
    img[: h // 5, : w // 5] = np.array([250, 10, 40], dtype=np.uint8)  # saturated block
    return img


def to_chw(img_hwc):
    return torch.from_numpy(img_hwc).permute(2, 0, 1).contiguous()


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    images = {
        "a": make_image(37, 29, 1),
        "b": make_image(96, 96, 2),
        "c": np.random.default_rng(3).integers(0, 256, size=(32, 32, 3), dtype=np.uint8),
    }
    for name, img in images.items():
        img.tofile(os.path.join(OUT, f"input_{name}.bin"))
    cases = []

    def add(name, op, image, params, out):
        out = out.contiguous()
        if out.dtype == torch.uint8:
            dtype = "u8"
            data = out.numpy().astype(np.uint8)
        else:
            dtype = "f32"
            data = out.numpy().astype("<f4")
        data.tofile(os.path.join(OUT, f"{name}.bin"))
        h, w = images[image].shape[:2]
        cases.append({
            "name": name, "op": op, "input": f"input_{image}.bin", "width": w, "height": h,
            "params": params, "output": f"{name}.bin", "shape": list(out.shape), "dtype": dtype,
        })

    t = {k: to_chw(v) for k, v in images.items()}

    # RandomResizedCrop's op: resized_crop(top, left, height, width, size), bilinear, antialias.
    for k, (img, box, size) in enumerate([
        ("a", (3, 5, 20, 25), (32, 32)),
        ("a", (0, 0, 29, 37), (32, 32)),
        ("b", (10, 4, 70, 80), (32, 32)),
        ("b", (20, 30, 50, 41), (96, 96)),
        ("b", (0, 0, 96, 96), (40, 56)),
        ("c", (2, 3, 20, 27), (32, 32)),
    ]):
        out = F.resized_crop(t[img], *box, list(size), F.InterpolationMode.BILINEAR, antialias=True)
        add(f"resized_crop_{k}", "resized_crop", img,
            {"top": box[0], "left": box[1], "height": box[2], "width": box[3],
             "out_height": size[0], "out_width": size[1]}, out)

    add("hflip_a", "hflip", "a", {}, F.hflip(t["a"]))

    for img, f in [("a", 0.6), ("a", 1.4), ("b", 1.23)]:
        add(f"brightness_{img}_{f}", "brightness", img, {"factor": f}, F.adjust_brightness(t[img], f))
    for img, f in [("a", 0.6), ("a", 1.4), ("b", 0.77), ("c", 1.37)]:
        add(f"contrast_{img}_{f}", "contrast", img, {"factor": f}, F.adjust_contrast(t[img], f))
    for img, f in [("a", 0.6), ("a", 1.4), ("a", 0.0), ("b", 1.31)]:
        add(f"saturation_{img}_{f}", "saturation", img, {"factor": f}, F.adjust_saturation(t[img], f))
    for img, f in [("a", -0.1), ("a", 0.1), ("a", 0.5), ("a", -0.5), ("b", 0.037), ("c", -0.063)]:
        add(f"hue_{img}_{f}", "hue", img, {"factor": f}, F.adjust_hue(t[img], f))
    for img in ["a", "b"]:
        add(f"grayscale_{img}", "grayscale", img, {}, F.rgb_to_grayscale(t[img], num_output_channels=3))
    for img, k, s in [("b", 9, 0.1), ("b", 9, 1.0), ("b", 9, 2.0), ("b", 19, 1.7), ("a", 3, 0.8),
                      ("a", 9, 1.5), ("c", 3, 1.9)]:
        add(f"blur_{img}_{k}_{s}", "blur", img, {"kernel_size": k, "sigma": s},
            F.gaussian_blur(t[img], [k, k], [s, s]))
    for img, th in [("a", 128.0), ("b", 77.5)]:
        add(f"solarize_{img}_{th}", "solarize", img, {"threshold": th}, F.solarize(t[img], th))

    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    add("normalize_a", "normalize", "a", {"mean": mean, "std": std},
        F.normalize(t["a"].float() / 255.0, mean, std))

    # Resize (shorter side) + CenterCrop.
    for k, (img, rs, cs) in enumerate([("b", 40, 32), ("a", 32, 32), ("a", 36, 32), ("b", 96, 96)]):
        r = F.resize(t[img], [rs], F.InterpolationMode.BILINEAR, antialias=True)
        out = F.center_crop(r, [cs, cs])
        add(f"resize_center_crop_{k}", "resize_center_crop", img, {"resize": rs, "crop": cs}, out)

    # RandomCrop(32, padding=4) with given offsets in the padded image, optionally flipped.
    for k, (img, i, j, flip) in enumerate([("a", 5, 7, False), ("a", 0, 13, True), ("c", 8, 0, False)]):
        out = F.crop(F.pad(t[img], [4, 4, 4, 4], fill=0), i, j, 32, 32)
        if flip:
            out = F.hflip(out)
        add(f"padded_crop_{k}", "padded_crop", img,
            {"padding": 4, "i": i, "j": j, "size": 32, "flip": flip}, out)

    # Whole SimSiam views with fixed parameters, in torchvision's order: resized crop, jitter
    # (ops in the given order), grayscale, blur, flip, ToTensor, Normalize.
    ops = ["brightness", "contrast", "saturation", "hue"]
    views = [
        ("b", (12, 8, 60, 70), 96, [3, 0, 2, 1], (1.2, 0.7, 1.3, -0.08), False, (9, 1.3), True),
        ("a", (2, 3, 25, 30), 32, [1, 3, 0, 2], (0.65, 1.33, 0.9, 0.09), True, None, False),
        ("b", (0, 10, 80, 86), 64, [2, 1, 3, 0], (1.38, 1.1, 0.62, 0.02), False, (5, 0.4), True),
    ]
    for k, (img, box, size, order, fac, gray, blur, flip) in enumerate(views):
        x = F.resized_crop(t[img], *box, [size, size], F.InterpolationMode.BILINEAR, antialias=True)
        for o in order:
            x = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue][o](x, fac[o])
        if gray:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        if blur:
            x = F.gaussian_blur(x, [blur[0], blur[0]], [blur[1], blur[1]])
        if flip:
            x = F.hflip(x)
        out = F.normalize(x.float() / 255.0, mean, std)
        add(f"simsiam_view_{k}", "simsiam_view", img,
            {"top": box[0], "left": box[1], "height": box[2], "width": box[3], "size": size,
             "order": [ops[o] for o in order], "brightness": fac[0], "contrast": fac[1],
             "saturation": fac[2], "hue": fac[3], "grayscale": gray,
             "blur_kernel": blur[0] if blur else None, "blur_sigma": blur[1] if blur else None,
             "flip": flip, "mean": mean, "std": std}, out)

    index = {
        "generator": "tools/augment_fixtures.py",
        "reference": "torchvision.transforms.functional (v1) on uint8 tensors",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "layout": "inputs HWC uint8; outputs CHW (u8, or f32 little-endian)",
        "cases": cases,
    }
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(cases)} cases, {total} bytes, to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
