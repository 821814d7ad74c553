"""Peer of `benchmarks.backend_bench`: torchvision's ResNet-50 in PyTorch, on the same device.

    python -m benchmarks.torchvision_resnet50_bench                 # 224 px, bf16, batch 256
    python -m benchmarks.torchvision_resnet50_bench --compile       # with torch.compile
    python -m benchmarks.torchvision_resnet50_bench --image_size=32 --batch_size=2 --steps=1 \
        --repeats=1 --warmup=1 --precision=fp32 --device=cpu        # a smoke run (the tests')

The way PyTorch users train it fast: channels_last memory format, autocast to bfloat16 (weights
and BN statistics stay float32), SGD momentum 0.9 with weight decay 1e-4, optionally
torch.compile. One random batch stays on the device (the peer's best case: tfresnet's run copies
each batch from host memory). The first steps (and compilation) are excluded; each timed round of
`steps` gives a rate and the median is reported. Prints one JSON line with the keys of
`benchmarks.backend_bench` for the rates (`train_img_s`, `infer_img_s`) and the precision as the
other peers spell it ("bf16" / "fp32"), as benchmarks/torch_resnet_bench.py prints them.

torchvision's model is ResNet-50 v1.5 (stride on the 3x3), tfresnet's default. Where torchvision
does not import (not installed, or a wheel built for another torch), the same network from
benchmarks/torch_resnet.py stands in, and the line's "impl" says so. Install:
`pip install -e '.[bench]'` (torch), plus the torchvision release that matches it.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks import torch_resnet

PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}
CLASSES = 1000


def resnet50():
    """(torchvision's ResNet-50, "torchvision <version>"), or the hand-written one."""
    try:
        import torchvision

        return torchvision.models.resnet50(weights=None), f"torchvision {torchvision.__version__}"
    except (ImportError, RuntimeError) as err:  # RuntimeError: built for another torch
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return torch_resnet.resnet50(CLASSES), f"torch_resnet (torchvision: {reason})"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn, count, device, steps, repeats):
    """Median images/s over `repeats` rounds of `steps` calls of `fn` (each `count` images)."""
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        synchronize(device)
        rates.append(steps * count / (time.perf_counter() - start))
    return statistics.median(rates)


def bench(args):
    device = torch.device(args.device)
    model, impl = resnet50()
    model = model.to(device, memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run = torch.compile(model) if args.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    size = args.image_size
    images = torch.rand(args.batch_size, 3, size, size, device=device) * 255
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, CLASSES, (args.batch_size,), device=device)
    dtype = PRECISIONS[args.precision]
    autocast = dict(device_type=device.type, dtype=dtype, enabled=dtype is not None)

    def train_step():
        with torch.autocast(**autocast):
            loss = F.cross_entropy(run(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step():
        with torch.no_grad(), torch.autocast(**autocast):
            run(images)

    model.train()
    for _ in range(args.warmup):
        train_step()
    train = timed_rate(train_step, args.batch_size, device, args.steps, args.repeats)
    model.eval()
    for _ in range(args.warmup):
        infer_step()
    infer = timed_rate(infer_step, args.batch_size, device, args.steps, args.repeats)
    return {
        "kind": "peer",
        "peer": "torchvision",
        "impl": impl,
        "model": args.model,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": args.precision,
        "image_size": size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "compile": args.compile,
        "params": params,
        "train_img_s": round(train, 2),
        "infer_img_s": round(infer, 2),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="resnet50", choices=["resnet50"])
    parser.add_argument("--precision", default="bf16", choices=sorted(PRECISIONS))
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; median kept")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for name in ("image_size", "batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    return args


if __name__ == "__main__":
    print(json.dumps(bench(parse_args(sys.argv[1:]))), flush=True)
