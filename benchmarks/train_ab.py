"""A paired A/B of two `tfresnet train` settings: the steady training rate of each.

From the repository root, in an environment with tfresnet installed, e.g. what synchronised
BatchNorm costs under MirroredStrategy, and what several steps per execution save:

    python -m benchmarks.train_ab --a=--sync_bn --b=--nosync_bn \\
        --flags="--strategy=mirrored --num_replicas=2" --pairs=2
    python -m benchmarks.train_ab --a=--steps_per_execution=1 --b=--steps_per_execution=6 \\
        --flags=--precision=mixed_bfloat16 --pairs=3

Each pair trains ResNet-20 on Fashion-MNIST for one epoch (468 steps at batch 128) once with
`--flags --a` and once with `--flags --b`, one right after the other (the order alternates from
pair to pair), through benchmarks/timed_train.py (`tfresnet train`, its phases marked), and reads
the steady training seconds from the phases each run prints (`train_s`: the first call,
evaluation and writes excluded). It prints each pair's
images/s and the median of b's rate over a's. Run nothing else meanwhile. Words of the form
NAME=value in a setting are environment variables of its runs (`--a=TF_NUM_INTEROP_THREADS=1`).
"""

import os
import re
import shlex
import statistics
import tempfile

from benchmarks.end_to_end import (
    TIMED_TRAIN,
    append_json,
    machine_context,
    parser,
    run_main,
    train_once,
)
from tfresnet import markdown

BATCH = 128


def split_setting(text):
    """(environment, flags) of a setting such as "TF_ENABLE_ONEDNN_OPTS=0 --bn=keras": words
    of the form NAME=value are environment variables for the run, the rest its flags."""
    words = shlex.split(text)
    env = [w for w in words if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
    return env, [w for w in words if w not in env]


def command_of(args, side, *fixed):
    """The command of one run of setting `side`: `<--tfresnet> <fixed> --flags --side`, under
    `env` when the settings set environment variables."""
    env, flags = split_setting(args.flags)
    side_env, side_flags = split_setting(getattr(args, side))
    prefix = ["env", *env, *side_env] if env or side_env else []
    return [*prefix, *shlex.split(args.tfresnet), *fixed, *flags, *side_flags]


def train_command(args, run_dir, side):
    return command_of(
        args,
        side,
        f"--dataset={args.dataset}",
        f"--model={args.model}",
        "--epochs=1",
        f"--batch_size={BATCH}",
        "--noexport",
        f"--run_dir={run_dir}",
        "--overwrite",
    )


def measure(args, side):
    """{images_per_s, wall_s, load1, hardware} of one run of setting `side` ("a" or "b")."""
    run_dir = tempfile.mkdtemp(prefix=f"train-ab-{side}-")
    command = train_command(args, run_dir, side)
    result, results, phases = train_once(command, run_dir, label=side, echo=args.verbose)
    schedule = results["schedule"]
    # The first call (tracing) is timed apart: it ran steps_per_execution steps.
    steps = schedule["steps"] - schedule.get("steps_per_execution", 1)
    return {
        "images_per_s": steps * BATCH / phases["train_s"],
        "wall_s": result["wall_s"],
        "load1": round(os.getloadavg()[0], 2),
        "hardware": results["segments"][-1].get("hardware"),
    }


def speedup(pair, key="images_per_s"):
    """b's rate over a's (by default the steady training rate)."""
    return pair["b"][key] / pair["a"][key]


def records(args, pairs, context):
    """One JSON record per pair: the settings (a's and b's flags as `a_flags`, `b_flags`, since
    `a` and `b` hold the measurements), where and when it ran, and both measurements."""
    settings = {k: v for k, v in vars(args).items() if k not in ("a", "b")}
    return [
        {"pair": i, **settings, "a_flags": args.a, "b_flags": args.b, **context, **pair}
        for i, pair in enumerate(pairs, 1)
    ]


def format_table(pairs, a, b, key="images_per_s", unit="img/s"):
    """Each pair's `key` for a and b, b over a, and the median ratio, as a markdown table."""
    header = ["pair", f"a: {label(a)} {unit}", f"b: {label(b)} {unit}", "b / a"]
    rows = [
        (i, f"{pair['a'][key]:.0f}", f"{pair['b'][key]:.0f}", f"{speedup(pair, key):.3f}x")
        for i, pair in enumerate(pairs, 1)
    ]
    median = statistics.median(speedup(pair, key) for pair in pairs)
    rows.append(("median", "", "", f"**{median:.3f}x**"))
    return markdown.table(header, rows, align="rrrr")


def label(setting):
    """A setting as a table shows it: in code quotes, or "(defaults)" when empty."""
    return f"`{setting}`" if setting.strip() else "(defaults)"


def run_pairs(args, measure):
    """`args.pairs` pairs of `measure(args, side)`, a then b, then b then a, and so on."""
    pairs = []
    for i in range(args.pairs):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        pair = {side: measure(args, side) for side in order}
        print(
            f"pair {i + 1}/{args.pairs}: a {pair['a']['images_per_s']:.0f} img/s, "
            f"b {pair['b']['images_per_s']:.0f} img/s",
            flush=True,
        )
        pairs.append(pair)
    return pairs


def parse_args(argv=None):
    p = ab_parser(__doc__, flags_help="flags (and environment) of both", program=TIMED_TRAIN)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="fashion_mnist")
    return parse_pairs(p, argv)


def ab_parser(doc, flags_help, program, flags_required=False):
    """The arguments of every A/B driver: the two settings, what both share, pairs, output;
    `program` is the default command that measures a setting (--tfresnet)."""
    p = parser(doc)
    p.add_argument("--a", required=True, help="setting a: flags and NAME=value environment")
    p.add_argument("--b", required=True, help="setting b; may be empty (the defaults)")
    p.add_argument("--flags", default="", required=flags_required, help=flags_help)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--tfresnet", default=program, help="the command that measures a setting")
    p.add_argument("--json_out", default=None, help="append JSON lines here")
    p.add_argument("--verbose", action="store_true", help="echo the runs' output")
    return p


def parse_pairs(p, argv):
    """`p`'s arguments; at least one pair, and settings that split into words."""
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    for name in ("a", "b", "flags", "tfresnet"):
        try:
            shlex.split(getattr(args, name))
        except ValueError as err:
            p.error(f"--{name}={getattr(args, name)!r} does not split into words: {err}")
    return args


def main(argv=None):
    args = parse_args(argv)
    context = machine_context()
    pairs = run_pairs(args, measure)
    print(
        f"\n{args.model} on {args.dataset}, one epoch at batch {BATCH}, flags "
        f"{args.flags or '(none)'}, {os.cpu_count()} CPUs:\n"
    )
    print(format_table(pairs, args.a, args.b))
    if args.json_out:
        append_json(args.json_out, records(args, pairs, context))
    return pairs


if __name__ == "__main__":
    run_main(main)
