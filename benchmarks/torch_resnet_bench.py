"""Peer baseline: the same ResNets in plain PyTorch, timed on this machine.

A measuring stick, not part of the installed package. It builds the CIFAR
ResNet-20/56 (option A shortcuts, as in He et al. 2015 and the widely used
PyTorch reproductions) and ImageNet ResNet-50 (bottleneck, projection
shortcuts, stride on the 3x3 conv as in torchvision) in PyTorch, trains them
with SGD on random data, and prints one JSON line per configuration:

    {"peer": "torch", "model": "resnet20", "precision": "bf16",
     "batch": 128, "train_img_s": ..., "infer_img_s": ...}

Install once, from the repository root (setup.py's "bench" extra: torch 2.13):
    pip install -e '.[bench]'
Run:
    python benchmarks/torch_resnet_bench.py            # all configs
    python benchmarks/torch_resnet_bench.py resnet20   # one model

Run it right after the project's own benchmark of the same model and compare
ratios (absolute numbers drift between runs): benchmarks/paired_step_rate.py
does exactly that, model by model, and prints the ratios.
"""

import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(torch.get_num_threads())


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin if (stride != 1 or cin != cout) else 0

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        s = x
        if self.pad:
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + s)


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.c1 = nn.Conv2d(cin, width, 1, bias=False)
        self.b1 = nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.b2 = nn.BatchNorm2d(width)
        self.c3 = nn.Conv2d(width, cout, 1, bias=False)
        self.b3 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(y + (self.proj(x) if self.proj is not None else x))


def cifar_resnet(depth, classes=10):
    n = (depth - 2) // 6
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for i, c in enumerate((16, 32, 64)):
        for j in range(n):
            layers.append(Basic(cin, c, 2 if (i > 0 and j == 0) else 1))
            cin = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def resnet50(classes=1000):
    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        for j in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if (i > 0 and j == 0) else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, classes)]
    return nn.Sequential(*layers)


CONFIGS = {
    "resnet20": (lambda: cifar_resnet(20), 32, 128, 10),
    "resnet56": (lambda: cifar_resnet(56), 32, 128, 10),
    "resnet50": (resnet50, 224, 32, 1000),
}


def bench(name, precision, steps=10):
    make, size, batch, classes = CONFIGS[name]
    model = make().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,))
    auto = dict(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        with torch.autocast(**auto):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    train = steps * batch / (time.perf_counter() - t)
    model.eval()
    with torch.no_grad(), torch.autocast(**auto):
        model(x)
        t = time.perf_counter()
        for _ in range(steps):
            model(x)
        infer = steps * batch / (time.perf_counter() - t)
    return {
        "peer": "torch",
        "torch": torch.__version__,
        "model": name,
        "precision": precision,
        "image": size,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "train_img_s": round(train, 1),
        "infer_img_s": round(infer, 1),
    }


if __name__ == "__main__":
    names = sys.argv[1:] or list(CONFIGS)
    for name in names:
        for precision in ("fp32", "bf16"):
            print(
                json.dumps(bench(name, precision, steps=5 if name == "resnet50" else 20)),
                flush=True,
            )
