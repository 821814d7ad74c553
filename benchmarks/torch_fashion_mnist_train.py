"""PyTorch peer trainer: tfresnet's Fashion-MNIST ResNet-20 run, written as PyTorch would have it.

The end-to-end yardstick for `tfresnet train --dataset=fashion_mnist --model=resnet20`: the same
network, recipe and data in plain PyTorch + numpy (no TensorFlow, no tfresnet import), run as a
whole process so that start-up, data loading, training and per-epoch testing all count.

Matched to tfresnet (tfresnet/recipes.py, data.py; the network is benchmarks/torch_resnet.py's
CIFAR ResNet-20, matched to tfresnet's blocks, layers and initialisation there):
- SGD momentum 0.9, weight decay 1e-4 on conv and linear weights only (not BN, not biases),
  batch 128 (drop_last), lr 0.1 x batch/128, divided by 10 at 50% and 75% of
  epochs * floor(n_train / batch) iterations, rounded as tfresnet.recipes.paper_schedule does
  (lr for step i, 0-based, is the first value whose boundary is >= i).
- Pad 4 + random 28x28 crop + horizontal flip; per-pixel mean and one scalar std of the training
  set; test error after every epoch (as tfresnet's per-epoch test curve).

Done the PyTorch way rather than copied: channels_last, the whole set as one uint8 tensor, crops
and flips for a whole batch by one gather over an index grid, a full reshuffle each epoch, no
DataLoader workers, torch's own SGD (velocity in gradient units).

    python -m benchmarks.torch_fashion_mnist_train --epochs=3 [--precision=bf16] [--compile]
    python -m benchmarks.torch_fashion_mnist_train --epochs=1 --limit_train=512 --limit_test=256

Data: Debian's IDX files (`apt-get install -y dataset-fashion-mnist`), or --data_dir with the
four MNIST-format files. One line per epoch, then one JSON line:
{"peer": "torch", "epochs", "wall_s", "startup_s", "train_s", "eval_s", "test_error",
"train_error", "peak_rss_mb", "images_per_s", ...}. wall_s is the process's age at the end
(interpreter start-up included where /proc tells it); images_per_s counts the epochs after the
first, as tfresnet's train_images_per_s does (all of them for a 1-epoch run).
"""

import time

START = time.perf_counter()  # before the imports, so their cost counts in startup_s

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.phases import process_age  # noqa: E402
from benchmarks.torch_resnet import cifar_resnet  # noqa: E402

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
PAPER_STEPS, PAPER_BOUNDARIES = 64_000, (32_000, 48_000)  # tfresnet's cifar recipe
WARMUP_STEPS, WARMUP_MIN_DEPTH = 400, 110


# The process's age at START: the interpreter's own start-up (the imports above are timed twice
# if read from /proc now, so take them out again); 0 where /proc is missing.
AGE_AT_START = max(0.0, (process_age() or 0.0) - (time.perf_counter() - START))


def elapsed():
    return AGE_AT_START + time.perf_counter() - START


# --- data -----------------------------------------------------------------------------------


def read_idx(path):
    """The uint8 array of an IDX file (gzipped when the name ends in .gz)."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 0x08:
        raise ValueError(f"{path!r} is not a uint8 IDX file (bad magic number).")
    ndim, header = raw[3], 4 + 4 * raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise ValueError(f"{path!r}: the header says {shape}, the data has other length.")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def idx_path(folder, prefix, kind):
    suffix = "idx3-ubyte" if kind == "images" else "idx1-ubyte"
    for sep in ("-", "."):
        for gz in (".gz", ""):
            path = os.path.join(folder, f"{prefix}-{kind}{sep}{suffix}{gz}")
            if os.path.exists(path):
                return path
    raise FileNotFoundError(
        f"No {prefix}-{kind}-{suffix}[.gz] in {folder!r}; install Debian's "
        "dataset-fashion-mnist or pass --data_dir with the four MNIST-format files."
    )


def load_split(folder, prefix, limit=None):
    """(uint8 images (N, H, W, C), int64 labels (N,)) as torch tensors, the first `limit`."""
    images = read_idx(idx_path(folder, prefix, "images"))[:limit]
    labels = read_idx(idx_path(folder, prefix, "labels"))[:limit]
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def pixel_stats(images):
    """Per-pixel mean (H, W, C) and one scalar std over the training images: float64 sums in
    chunks, so the uint8 set is never converted whole (as tfresnet.data does)."""
    x, chunk = images.numpy(), 4096
    total = sum(x[i : i + chunk].sum(axis=0, dtype=np.float64) for i in range(0, len(x), chunk))
    mean = total / len(x)
    squares = sum(float(((x[i : i + chunk] - mean) ** 2).sum()) for i in range(0, len(x), chunk))
    std = max(math.sqrt(squares / x.size), 1e-3)
    return torch.from_numpy(mean.astype(np.float32)), std


def normalize(images, mean, std):
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in channels_last memory, standardised."""
    return ((images.float() - mean) / std).permute(0, 3, 1, 2)


def crop_and_flip(images, top, left, flip, pad):
    """Crops of the zero-padded uint8 batch (B, H, W, C): image b's H x W window at
    (top[b], left[b]) of its padded copy, mirrored left-right where flip[b]; one gather."""
    b, h, w, _ = images.shape
    padded = F.pad(images, (0, 0, pad, pad, pad, pad))
    rows = top[:, None] + torch.arange(h)
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + left[:, None]
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_crop_flip(images, pad, flip, generator):
    """The paper's augmentation for a whole batch: random offsets in [0, 2 pad], flips at p=1/2."""
    b = len(images)
    top = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    mirror = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    return crop_and_flip(images, top, left, mirror, pad)


# --- model and schedule ----------------------------------------------------------------------


def param_groups(model, weight_decay):
    """Weight decay on conv and linear weights only: never BN parameters or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def paper_schedule(total_steps, depth, lr):
    """(boundaries, values) exactly as tfresnet.recipes.paper_schedule builds them."""
    scale = total_steps / PAPER_STEPS
    boundaries = [max(1, round(b * scale)) for b in PAPER_BOUNDARIES]
    values = [lr * 0.1**i for i in range(len(boundaries) + 1)]
    if depth >= WARMUP_MIN_DEPTH:
        boundaries = [max(1, round(WARMUP_STEPS * scale))] + boundaries
        values = [0.01 * lr / 0.1] + values  # the recipe's warm-up lr 0.01 at base lr 0.1
    for i in range(1, len(boundaries)):
        boundaries[i] = max(boundaries[i], boundaries[i - 1] + 1)
    return boundaries, values


def lr_at(step, boundaries, values):
    """Keras' PiecewiseConstantDecay at 0-based `step`."""
    for boundary, value in zip(boundaries, values, strict=False):
        if step <= boundary:
            return value
    return values[-1]


# --- training -------------------------------------------------------------------------------


def evaluate(model, images, labels, batch_size, autocast):
    """Top-1 error over pre-normalised channels_last images, in eval mode."""
    model.eval()
    wrong = 0
    with torch.inference_mode(), autocast():
        for i in range(0, len(labels), batch_size):
            logits = model(images[i : i + batch_size])
            wrong += int((logits.argmax(1) != labels[i : i + batch_size]).sum())
    return wrong / len(labels)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--eval_batch_size", type=int, default=500)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--depth", type=int, default=20, help="CIFAR depth 6n+2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_dir", default=DEBIAN_FASHION_MNIST)
    p.add_argument("--threads", type=int, default=0, help="0: every core this process may use")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start)")
    p.add_argument("--limit_train", type=int, default=None, help="first N training images")
    p.add_argument("--limit_test", type=int, default=None, help="first N test images")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch_size must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train_x, train_y = load_split(args.data_dir, "train", args.limit_train)
    test_x, test_y = load_split(args.data_dir, "t10k", args.limit_test)
    mean, std = pixel_stats(train_x)
    test_x = normalize(test_x, mean, std).contiguous(memory_format=torch.channels_last)
    n, (h, _, c) = len(train_y), train_x.shape[1:]
    if n < args.batch_size:
        raise SystemExit(f"batch_size {args.batch_size} > {n} training images.")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    pad = max(1, round(h / 8))  # 4 px at 28x28 and 32x32, as tfresnet.pipeline.cifar_augment
    steps_per_epoch = n // args.batch_size  # drop_last
    total_steps = args.epochs * steps_per_epoch
    boundaries, values = paper_schedule(total_steps, args.depth, 0.1 * args.batch_size / 128)

    model = cifar_resnet(args.depth, c, num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=values[0], momentum=0.9)
    run = torch.compile(model) if args.compile else model
    bf16 = args.precision == "bf16"

    def autocast():
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    startup = elapsed()
    train_s, eval_s, epoch_times = 0.0, 0.0, []
    step, test_error, train_error = 0, None, None
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        for i in range(steps_per_epoch):
            index = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = random_crop_flip(train_x[index], pad, args.flip, generator)
            x = normalize(x, mean, std)  # channels_last already: (B, C, H, W) over NHWC memory
            y = train_y[index]
            lr = lr_at(step, boundaries, values)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast():
                logits = run(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().float()
            correct += (logits.detach().argmax(1) == y).sum()
            step += 1
        epoch_time = time.perf_counter() - t0
        epoch_times.append(epoch_time)
        train_s += epoch_time
        t1 = time.perf_counter()
        test_error = evaluate(run, test_x, test_y, args.eval_batch_size, autocast)
        eval_s += time.perf_counter() - t1
        seen = steps_per_epoch * args.batch_size
        train_error = 1.0 - int(correct) / seen
        print(
            f"epoch {epoch}/{args.epochs}: loss {float(loss_sum) / steps_per_epoch:.4f}, "
            f"train error {train_error:.2%}, test error {test_error:.2%}, lr {lr:g}, "
            f"{epoch_time:.1f} s train ({seen / epoch_time:.0f} img/s), "
            f"{time.perf_counter() - t1:.1f} s test",
            flush=True,
        )
    timed = epoch_times[1:] or epoch_times
    result = {
        "peer": "torch",
        "torch": torch.__version__,
        "model": f"resnet{args.depth}",
        "precision": args.precision,
        "compile": args.compile,
        "threads": threads,
        "batch_size": args.batch_size,
        "train_images": n,
        "test_images": len(test_y),
        "epochs": args.epochs,
        "steps": total_steps,
        "wall_s": round(elapsed(), 3),
        "startup_s": round(startup, 3),
        "train_s": round(train_s, 3),
        "eval_s": round(eval_s, 3),
        "test_error": test_error,
        "train_error": train_error,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "images_per_s": round(steps_per_epoch * args.batch_size * len(timed) / sum(timed), 1),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
