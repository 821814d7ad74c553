"""A paired A/B of two `benchmarks.bench` settings: training and inference rates of one model.

From the repository root, in an environment with tfresnet installed, e.g. what TF's fused
BatchNorm gains over Keras' own, what XLA costs on a CPU, and what oneDNN is worth:

    python -m benchmarks.bench_ab --a=--bn=keras --b=--bn=fused \\
        --flags="--models=resnet20 --precisions=float32" --pairs=3
    python -m benchmarks.bench_ab --a=--nojit_compile --b=--jit_compile \\
        --flags="--models=resnet20 --precisions=float32" --pairs=3
    python -m benchmarks.bench_ab --a= --b=TF_ENABLE_ONEDNN_OPTS=0 \\
        --flags="--models=resnet20 --precisions=mixed_bfloat16" --pairs=3

Each pair runs `python -m benchmarks.bench` (no input-pipeline timing, a small matmul) once with
`--flags --a` and once with `--flags --b`, one right after the other, the order alternating
from pair to pair, and reads the model's record: training images/s (wall and per CPU-second,
the figure that a busy machine disturbs least) and inference images/s. It prints each table
with the median of b over a. Words of the form NAME=value in a setting are environment
variables of its runs. `--flags` names one model and one precision. Run nothing else meanwhile.
"""

import json
import os
import shlex
import sys
import tempfile

from benchmarks import ab_table
from benchmarks.end_to_end import append_json, failed, machine_context, run_main, run_process
from benchmarks.train_ab import (
    ab_parser,
    command_of,
    format_table,
    parse_pairs,
    records,
    run_pairs,
    split_setting,
)

BENCH = f"{shlex.quote(sys.executable)} -m benchmarks.bench"


def bench_command(args, output, side):
    return command_of(args, side, "--nopipeline", "--matmul_size=512", f"--output={output}")


def read_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def measure(args, side):
    """{images_per_s, images_per_cpu_s, infer_images_per_s, wall_s, load1, hardware,
    onednn_opts, record} of one `benchmarks.bench` run of setting `side`."""
    fd, output = tempfile.mkstemp(prefix=f"bench-ab-{side}-", suffix=".jsonl")
    os.close(fd)
    command = bench_command(args, output, side)
    try:
        result = run_process(command, label=side, echo=args.verbose)
        if result["returncode"] != 0:
            raise failed("benchmarks.bench", command, result)
        found = read_records(output)
    finally:
        os.remove(output)
    cases = [r for r in found if r["kind"] == "model"]
    hosts = [r for r in found if r["kind"] == "host"]
    if len(cases) != 1 or len(hosts) != 1:
        raise RuntimeError(
            f"{shlex.join(command)} wrote {len(cases)} model records, not one (a setting that "
            "names --models, --precisions or --output?)"
        )
    [model], [host] = cases, hosts
    return {
        "images_per_s": model["train_img_s"],
        "images_per_cpu_s": model["train_img_cpu_s"],
        "infer_images_per_s": model["infer_img_s"],
        "wall_s": result["wall_s"],
        "load1": round(os.getloadavg()[0], 2),
        "hardware": host["cpu"],
        "onednn_opts": host["onednn_opts"],
        "record": model,
    }


EXAMPLE = {"models": "resnet20", "precisions": "float32"}


def one_case(flags):
    """The error, if `flags` do not name exactly one model and one precision, else None."""
    _, words = split_setting(flags)
    for name in ("models", "precisions"):
        given = [w.split("=", 1)[1] for w in words if w.startswith(f"--{name}=")]
        if len(given) != 1 or not given[0] or "," in given[0]:
            return f"--flags must name exactly one --{name}= (e.g. --{name}={EXAMPLE[name]})"
    return None


def parse_args(argv=None):
    p = ab_parser(
        __doc__,
        flags_help="one model and one precision: '--models=resnet20 --precisions=float32'",
        program=BENCH,
        flags_required=True,
    )
    p.add_argument(
        "--skip_recorded",
        action="store_true",
        help="do nothing when --json_out already holds --pairs pairs of this comparison",
    )
    args = parse_pairs(p, argv)
    for name in ("a", "b"):
        _, words = split_setting(getattr(args, name))
        if any(w.startswith(("--models", "--precisions", "--output")) for w in words):
            p.error(f"--{name} must not set --models, --precisions or --output")
    error = one_case(args.flags)
    if error:
        p.error(error)
    return args


def recorded(args):
    """How many pairs of this comparison `args.json_out` already holds."""
    if not args.json_out or not os.path.exists(args.json_out):
        return 0
    mine = ab_table.comparison(records(args, [{}], {})[0])
    return sum(ab_table.comparison(r) == mine for r in ab_table.read_records([args.json_out]))


def main(argv=None):
    args = parse_args(argv)
    if args.skip_recorded and recorded(args) >= args.pairs:
        print(f"already in {args.json_out}: --a={args.a!r} --b={args.b!r} --flags={args.flags!r}")
        return []
    context = machine_context()
    pairs = run_pairs(args, measure)
    print(f"\n`python -m benchmarks.bench {args.flags}`, {os.cpu_count()} CPUs:")
    for key, unit in ab_table.RATES:
        print(f"\n{unit}:\n")
        print(format_table(pairs, args.a, args.b, key=key, unit=unit))
    if args.json_out:
        append_json(args.json_out, records(args, pairs, context))
    return pairs


if __name__ == "__main__":
    run_main(main)
