"""Peer baseline: the same ResNets in plain PyTorch, timed on this machine.

A measuring stick, not part of the installed package. It builds the CIFAR
ResNet-20/56 (option A shortcuts, as in He et al. 2015 and the widely used
PyTorch reproductions) and ImageNet ResNet-50 (bottleneck, projection
shortcuts, stride on the 3x3 conv as in torchvision) of
benchmarks/torch_resnet.py, trains them with SGD on random data, and prints
one JSON line per configuration:

    {"peer": "torch", "model": "resnet20", "precision": "bf16",
     "batch": 128, "train_img_s": ..., "infer_img_s": ...}

Install once, from the repository root (setup.py's "bench" extra: torch 2.13):
    pip install -e '.[bench]'
Run, from the repository root:
    python -m benchmarks.torch_resnet_bench            # all configs
    python -m benchmarks.torch_resnet_bench resnet20   # one model

Run it right after the project's own benchmark of the same model and compare
ratios (absolute numbers drift between runs): benchmarks/paired_step_rate.py
does exactly that, model by model, and prints the ratios.
"""

import json
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.torch_resnet import cifar_resnet, resnet50

torch.set_num_threads(torch.get_num_threads())


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
