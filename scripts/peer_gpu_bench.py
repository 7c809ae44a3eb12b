"""GPU peer for `siamlab bench simsiam --device cuda`: PyTorch SimSiam training-step throughput (pairs/s),
fp32 eager (TF32 off), the architectures of siamlab's presets at that size (CIFAR ResNet-18 stem; EfficientNet-B0
with a stride-1 stem up to 64 px; ViT-S patch 4 at 32 px; PiT-Ti patch/stride 4/2 at 32 px), projector
3x2048 with BN, predictor 2048->512->2048, Adam lr 1e-3 wd 1e-5), random inputs already on the device.
usage: python3 peer_gpu_bench.py BACKBONE B STEPS [SIZE]   (BACKBONE: resnet18 efficientnet_b0 vit_s pit_ti;
PEER_DEVICE=cpu runs it without a GPU; PEER_WARMUP=3 untimed steps first)"""
import os, sys, time, torch, torch.nn as nn, torchvision
bb, B, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = int(sys.argv[4]) if len(sys.argv) > 4 else 32
dev = torch.device(os.environ.get("PEER_DEVICE", "cuda")); tag = f"pytorch-{dev.type} {bb} B={B} size={size}"
torch.manual_seed(0); torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
if bb == "resnet18":
    net = torchvision.models.resnet18(); dim = 512
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); net.maxpool = nn.Identity(); net.fc = nn.Identity()
elif bb == "efficientnet_b0":   # siamlab's preset: stride-1 stem up to 64 px (timm's stride 2 above)
    net = torchvision.models.efficientnet_b0(); net.classifier = nn.Identity(); dim = 1280
    if size <= 64: net.features[0][0].stride = (1, 1)
elif bb == "vit_s":
    from torchvision.models.vision_transformer import VisionTransformer
    net = VisionTransformer(image_size=size, patch_size=4 if size == 32 else 8, num_layers=12, num_heads=6,
                            hidden_dim=384, mlp_dim=1536); net.heads = nn.Identity(); dim = 384
elif bb == "pit_ti":
    try:
        import timm
    except ImportError:
        print(f"{tag} skipped: timm is not importable"); sys.exit(0)
    # siamlab's presets: patch/stride 4/2 at 32 px, 8/4 at 64 and 96 px, 16/8 above
    p, st = (4, 2) if size <= 32 else (8, 4) if size <= 96 else (16, 8)
    net = timm.create_model("pit_ti_224", img_size=size, patch_size=p, stride=st, num_classes=0); dim = net.num_features
else:
    sys.exit(f"unknown backbone {bb!r} (resnet18 efficientnet_b0 vit_s pit_ti)")
D = 2048
proj = nn.Sequential(nn.Linear(dim, D, bias=False), nn.BatchNorm1d(D), nn.ReLU(), nn.Linear(D, D, bias=False),
                     nn.BatchNorm1d(D), nn.ReLU(), nn.Linear(D, D), nn.BatchNorm1d(D))
pred = nn.Sequential(nn.Linear(D, D // 4, bias=False), nn.BatchNorm1d(D // 4), nn.ReLU(), nn.Linear(D // 4, D))
model = nn.ModuleList([net, proj, pred]).to(dev).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
x1 = torch.randn(B, 3, size, size, device=dev); x2 = torch.randn(B, 3, size, size, device=dev)
cos = nn.CosineSimilarity(dim=1)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
def step():
    z1 = proj(net(x1)); z2 = proj(net(x2)); p1 = pred(z1); p2 = pred(z2)
    loss = -(cos(p1, z2.detach()).mean() + cos(p2, z1.detach()).mean()) * 0.5
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); return loss
for _ in range(int(os.environ.get("PEER_WARMUP", "3"))): step()
sync(); t0 = time.perf_counter()
for _ in range(steps): loss = step()
sync(); dt = time.perf_counter() - t0
print(f"{tag} pairs_per_s={B * steps / dt:.1f} s_per_step={dt / steps:.4f} loss={loss.item():.4f}")
