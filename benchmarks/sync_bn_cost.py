"""What synchronised BatchNorm costs under MirroredStrategy: paired `tfresnet train` runs.

From the repository root, in an environment with tfresnet installed:

    python benchmarks/sync_bn_cost.py --pairs=3

Each pair trains ResNet-20 on Fashion-MNIST for one epoch (468 steps) at batch 128 under
MirroredStrategy with `--replicas` replicas (logical CPUs on a CPU host), once with
`--sync_bn` and once with `--nosync_bn`, one right after the other, and reads the steady
training seconds from each run's results.json (`timings.train_s`: the first step, evaluation
and writes excluded). It prints each pair's images/s and the median slowdown of sync BN.
Synchronised BN all-reduces each BN layer's batch moments in every training step (Keras' BN
on the non-fused path); unsynchronised BN normalises each replica's own share of the batch.
Run nothing else meanwhile.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import tempfile

from end_to_end import append_json, default_tfresnet, failed, run_main, run_process

BATCH = 128


def train_command(args, run_dir, sync):
    return [
        *shlex.split(args.tfresnet),
        "train",
        f"--dataset={args.dataset}",
        f"--model={args.model}",
        "--epochs=1",
        f"--batch_size={BATCH}",
        "--strategy=mirrored",
        f"--num_replicas={args.replicas}",
        "--sync_bn" if sync else "--nosync_bn",
        f"--precision={args.precision}",
        "--noexport",
        f"--run_dir={run_dir}",
        "--overwrite",
    ]


def measure(args, sync):
    """{sync_bn, images_per_s, wall_s} of one run."""
    run_dir = tempfile.mkdtemp(prefix="sync-bn-")
    try:
        command = train_command(args, run_dir, sync)
        result = run_process(command, label="sync" if sync else "local", echo=args.verbose)
        path = os.path.join(run_dir, "results.json")
        if result["returncode"] != 0 or not os.path.exists(path):
            raise failed("tfresnet train", command, result)
        with open(path) as f:
            results = json.load(f)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    steps = results["schedule"]["steps"] - 1  # the first step is timed apart (tracing)
    return {
        "sync_bn": sync,
        "images_per_s": steps * BATCH / results["timings"]["train_s"],
        "wall_s": result["wall_s"],
        "load1": round(os.getloadavg()[0], 2),
    }


def slowdown(pair):
    """How much longer a step takes with sync BN: local rate / sync rate - 1."""
    return pair["local"]["images_per_s"] / pair["sync"]["images_per_s"] - 1


def format_table(pairs):
    lines = [
        "| pair | sync BN img/s | local BN img/s | sync BN step time |",
        "|---:|---:|---:|---:|",
    ]
    for i, pair in enumerate(pairs, 1):
        lines.append(
            f"| {i} | {pair['sync']['images_per_s']:.0f} | {pair['local']['images_per_s']:.0f} "
            f"| {slowdown(pair):+.1%} |"
        )
    median = statistics.median(slowdown(pair) for pair in pairs)
    lines.append(f"| median | | | **{median:+.1%}** |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--precision", default="float32")
    p.add_argument("--tfresnet", default=default_tfresnet(), help="the tfresnet command")
    p.add_argument("--json_out", default=None, help="append JSON lines here")
    p.add_argument("--verbose", action="store_true", help="echo the runs' output")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.replicas < 2:
        p.error("--pairs must be >= 1 and --replicas >= 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    pairs = []
    for i in range(args.pairs):
        # Alternate which goes first, so that neither always runs on a warmer machine.
        order = (True, False) if i % 2 == 0 else (False, True)
        pair = {("sync" if sync else "local"): measure(args, sync) for sync in order}
        print(
            f"pair {i + 1}/{args.pairs}: sync BN {pair['sync']['images_per_s']:.0f} img/s, "
            f"local BN {pair['local']['images_per_s']:.0f} img/s",
            flush=True,
        )
        pairs.append(pair)
    print(
        f"\n{args.model}, {args.replicas} replicas, batch {BATCH}, one epoch, "
        f"{args.precision}, {os.cpu_count()} CPUs:\n"
    )
    print(format_table(pairs))
    if args.json_out:
        append_json(args.json_out, [{"pair": i, **vars(args), **p} for i, p in enumerate(pairs, 1)])
    return pairs


if __name__ == "__main__":
    run_main(main)
