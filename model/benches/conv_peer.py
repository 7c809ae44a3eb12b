"""PyTorch peer of benches/conv.rs: the same convolution shapes, f32, batch 64, CPU.

usage: python model/benches/conv_peer.py [FILTER]   (e.g. /tmp/peer/bin/python)
Prints the fastest of timed repetitions in milliseconds, forward and forward+backward
(input and weight gradients, loss = y.sum()).
"""
import sys
import time

import torch
import torch.nn.functional as F

B = 64
SHAPES = [
    # name, count in ResNet-18, C, O, groups, K, HW, stride, padding, in the ResNet total
    ("resnet stem 3->64 k3 @32", 1, 3, 64, 1, 3, 32, 1, 1, True),
    ("resnet l1 64->64 k3 @32", 4, 64, 64, 1, 3, 32, 1, 1, True),
    ("resnet l2a 64->128 k3 s2 @32", 1, 64, 128, 1, 3, 32, 2, 1, True),
    ("resnet l2ds 64->128 k1 s2 @32", 1, 64, 128, 1, 1, 32, 2, 0, True),
    ("resnet l2 128->128 k3 @16", 3, 128, 128, 1, 3, 16, 1, 1, True),
    ("resnet l3a 128->256 k3 s2 @16", 1, 128, 256, 1, 3, 16, 2, 1, True),
    ("resnet l3ds 128->256 k1 s2 @16", 1, 128, 256, 1, 1, 16, 2, 0, True),
    ("resnet l3 256->256 k3 @8", 3, 256, 256, 1, 3, 8, 1, 1, True),
    ("resnet l4a 256->512 k3 s2 @8", 1, 256, 512, 1, 3, 8, 2, 1, True),
    ("resnet l4ds 256->512 k1 s2 @8", 1, 256, 512, 1, 1, 8, 2, 0, True),
    ("resnet l4 512->512 k3 @4", 3, 512, 512, 1, 3, 4, 1, 1, True),
    ("r96 stem 3->64 k7 s2 @96", 1, 3, 64, 1, 7, 96, 2, 3, False),
    ("r96 l1 64->64 k3 @24", 4, 64, 64, 1, 3, 24, 1, 1, False),
    ("r96 l2a 64->128 k3 s2 @24", 1, 64, 128, 1, 3, 24, 2, 1, False),
    ("r96 l2 128->128 k3 @12", 3, 128, 128, 1, 3, 12, 1, 1, False),
    ("r96 l3a 128->256 k3 s2 @12", 1, 128, 256, 1, 3, 12, 2, 1, False),
    ("r96 l3 256->256 k3 @6", 3, 256, 256, 1, 3, 6, 1, 1, False),
    ("r96 l4a 256->512 k3 s2 @6", 1, 256, 512, 1, 3, 6, 2, 1, False),
    ("r96 l4 512->512 k3 @3", 3, 512, 512, 1, 3, 3, 1, 1, False),
    ("effnet dw 96 k3 s2 @32", 1, 96, 96, 96, 3, 32, 2, 1, False),
    ("effnet dw 240 k5 @8", 1, 240, 240, 240, 5, 8, 1, 2, False),
    ("effnet pw 240->40 k1 @8", 1, 240, 40, 1, 1, 8, 1, 0, False),
]


import os
clock = time.process_time if os.environ.get("SIAMLAB_BENCH_CLOCK") == "cpu" else time.perf_counter
if os.environ.get("RAYON_NUM_THREADS"):
    torch.set_num_threads(int(os.environ["RAYON_NUM_THREADS"]))


def median_ms(f):
    f()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < 2 and len(times) < 20):
        t = clock()
        f()
        times.append((clock() - t) * 1e3)
    times.sort()
    return times[0]  # the fastest: robust to other processes on a shared machine


def main():
    filt = sys.argv[1] if len(sys.argv) > 1 else ""
    torch.manual_seed(0)
    print(f"pytorch {torch.__version__} conv f32 batch {B}, {torch.get_num_threads()} threads")
    print(f"{'shape':<34} {'count':>5} {'fwd ms':>10} {'fwd+bwd ms':>12} {'bwd ms':>10}")
    total = [0.0, 0.0]
    for name, count, c, o, g, k, hw, s, p, resnet in SHAPES:
        if filt not in name:
            continue
        x = torch.randn(B, c, hw, hw)
        w = torch.randn(o, c // g, k, k)

        def fwd():
            with torch.no_grad():
                F.conv2d(x, w, None, s, p, 1, g)

        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def both():
            xg.grad = None
            wg.grad = None
            F.conv2d(xg, wg, None, s, p, 1, g).sum().backward()

        f, b = median_ms(fwd), median_ms(both)
        print(f"{name:<34} {count:>5} {f:>10.2f} {b:>12.2f} {b - f:>10.2f}")
        if resnet:
            total[0] += f * count
            total[1] += b * count
        if name.startswith("resnet l4 "):
            print(f"{'resnet-18 all 20 convs (weighted)':<34} {20:>5} {total[0]:>10.2f} "
                  f"{total[1]:>12.2f} {total[1] - total[0]:>10.2f}")


if __name__ == "__main__":
    main()
