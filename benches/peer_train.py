"""PyTorch peer of `siamlab bench simsiam` / `siamlab bench finetune`: training-step throughput on random inputs
already on the device, fp32 eager (TF32 off), the architectures of siamlab's presets at that size.

  simsiam   two views per pair, projector 3x2048 with BN, predictor 2048->512->2048, symmetric negative cosine;
            prints pairs_per_s
  finetune  one view, backbone + Linear(F, 10), cross-entropy against fixed random labels; prints images_per_s

Both use Adam lr 1e-3 wd 1e-5 and one fixed batch. Presets (siamlab's `with_backbone`):
  resnet18           CIFAR stem (3x3/1, no max-pool) up to 96 px, ImageNet stem (7x7/2 + max-pool) above
  resnet18_cifar / resnet18_imagenet   that stem at any size
  efficientnet_b0    stride-1 stem up to 64 px, stride 2 above
  vit_s              patch 4 at 32 px, 8 at 64 and 96 px, 16 above
  pit_ti             patch/stride 4/2 at 32 px, 8/4 at 64 and 96 px, 16/8 above (needs timm)
It also prints gflop_per_sample: the FLOPs of one training step per pair (simsiam: both views, with projector and
predictor) or per image (finetune): 3 x the forward FLOPs (the backward computes the input and the weight gradients,
each as costly as the forward), the forward counted by torch.utils.flop_counter.FlopCounterMode (convolutions,
matmuls and attention, as fvcore counts them, 2 FLOPs per multiply-add; norms, activations and the optimizer are not
counted). The backward is not counted directly: torch 2.15's counter takes a grouped (depthwise) convolution's weight
gradient for a dense one, which would inflate EfficientNet-B0's count tenfold.

usage: python3 peer_train.py BACKBONE B STEPS [SIZE [simsiam|finetune]]
env: PEER_DEVICE=cpu runs it without a GPU (default cuda); PEER_WARMUP=3 untimed steps first;
PEER_PROFILE=1 prints torch.profiler's per-op table of the timed steps."""
import os, sys, time
import torch, torch.nn as nn, torchvision

if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
    sys.exit(__doc__)
bb, B, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = int(sys.argv[4]) if len(sys.argv) > 4 else 32
mode = sys.argv[5] if len(sys.argv) > 5 else "simsiam"
if mode not in ("simsiam", "finetune"):
    sys.exit(f"unknown mode {mode!r} (simsiam finetune)")
if B < 2:
    sys.exit("B must be at least 2 (BatchNorm needs two images)")
CLASSES = 10
dev = torch.device(os.environ.get("PEER_DEVICE", "cuda"))
tag = f"pytorch-{dev.type}{' finetune' if mode == 'finetune' else ''} {bb} B={B} size={size}"
torch.manual_seed(0); torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False

if bb in ("resnet18", "resnet18_cifar", "resnet18_imagenet"):
    net = torchvision.models.resnet18(); dim = 512; net.fc = nn.Identity()
    if bb == "resnet18_cifar" or (bb == "resnet18" and size <= 96):
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); net.maxpool = nn.Identity()
elif bb == "efficientnet_b0":
    net = torchvision.models.efficientnet_b0(); net.classifier = nn.Identity(); dim = 1280
    if size <= 64: net.features[0][0].stride = (1, 1)
elif bb == "vit_s":
    from torchvision.models.vision_transformer import VisionTransformer
    patch = 4 if size <= 32 else 8 if size <= 96 else 16
    net = VisionTransformer(image_size=size, patch_size=patch, num_layers=12, num_heads=6,
                            hidden_dim=384, mlp_dim=1536); net.heads = nn.Identity(); dim = 384
elif bb == "pit_ti":
    try:
        import timm
    except ImportError:
        print(f"{tag} skipped: timm is not importable"); sys.exit(0)
    p, st = (4, 2) if size <= 32 else (8, 4) if size <= 96 else (16, 8)
    net = timm.create_model("pit_ti_224", img_size=size, patch_size=p, stride=st, num_classes=0); dim = net.num_features
else:
    sys.exit(f"unknown backbone {bb!r} (resnet18 resnet18_cifar resnet18_imagenet efficientnet_b0 vit_s pit_ti)")

cos = nn.CosineSimilarity(dim=1)
if mode == "simsiam":
    D = 2048
    proj = nn.Sequential(nn.Linear(dim, D, bias=False), nn.BatchNorm1d(D), nn.ReLU(), nn.Linear(D, D, bias=False),
                         nn.BatchNorm1d(D), nn.ReLU(), nn.Linear(D, D), nn.BatchNorm1d(D))
    pred = nn.Sequential(nn.Linear(D, D // 4, bias=False), nn.BatchNorm1d(D // 4), nn.ReLU(), nn.Linear(D // 4, D))
    model = nn.ModuleList([net, proj, pred]).to(dev).train()

    def loss_of(x1, x2, _):
        z1 = proj(net(x1)); z2 = proj(net(x2)); p1 = pred(z1); p2 = pred(z2)
        return -(cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean()) * 0.5
else:
    head = nn.Linear(dim, CLASSES)
    model = nn.ModuleList([net, head]).to(dev).train()
    ce = nn.CrossEntropyLoss()

    def loss_of(x1, _, y):
        return ce(head(net(x1)), y)

opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
x1 = torch.randn(B, 3, size, size, device=dev); x2 = torch.randn(B, 3, size, size, device=dev)
y = torch.randint(0, CLASSES, (B,), generator=torch.Generator().manual_seed(1)).to(dev)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def count_gflop_per_sample(n=2):
    """3 x the FLOPs of one training-mode forward on n samples, per sample (linear in the batch; n=2 is cheap).
    Attention runs on PyTorch's math kernel meanwhile, so every kernel it uses is one the counter knows."""
    from torch.utils.flop_counter import FlopCounterMode
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        math_only = sdpa_kernel(SDPBackend.MATH)
    except ImportError:
        import contextlib
        math_only = contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with math_only, counter:
        loss_of(x1[:n], x2[:n], y[:n])
    return 3 * counter.get_total_flops() / n / 1e9


gflop = count_gflop_per_sample()


def step():
    loss = loss_of(x1, x2, y)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); return loss


for _ in range(int(os.environ.get("PEER_WARMUP", "3"))): step()
sync(); t0 = time.perf_counter()
if os.environ.get("PEER_PROFILE"):
    # The per-op table beside siamlab's SIAMLAB_PROFILE=1 (times include the profiler's overhead).
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps): loss = step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
else:
    for _ in range(steps): loss = step()
sync(); dt = time.perf_counter() - t0
rate = "pairs_per_s" if mode == "simsiam" else "images_per_s"
print(f"{tag} {rate}={B * steps / dt:.1f} s_per_step={dt / steps:.4f} loss={loss.item():.4f} "
      f"gflop_per_sample={gflop:.4f} threads={torch.get_num_threads()}")
