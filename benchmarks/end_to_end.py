"""End to end against PyTorch: tfresnet's training and the PyTorch peer trainer as whole processes.

The one command (from the repository root, in an environment with tfresnet and torch installed,
e.g. `pip install -e '.[bench]'`, and Debian's `dataset-fashion-mnist`):

    python -m benchmarks.end_to_end --epochs=3 --pairs=3 --precision=mixed_bfloat16 \\
        --json_out=docs/bench/end_to_end.jsonl

Each pair runs, one after the other (so both see the same machine load; --torch_first swaps the
order within a pair):

    python -m benchmarks.timed_train --dataset=fashion_mnist --model=resnet20 --epochs=N
        --run_dir=<tmp> --overwrite --verbose=2 [--precision=P] --seed=S
    python -m benchmarks.torch_fashion_mnist_train --epochs=N [--precision=bf16] --seed=S

and measures, per process: the wall time from spawn to exit (time.perf_counter around it: Python
start-up, imports, data loading, training, per-epoch testing, saving and tfresnet's export all
count), the peak resident memory of that process (its own rusage from os.wait4), the final test
error (tfresnet: results.json `final.test_error`; the peer: its JSON line) and the 1-minute load
average just before it starts. The first is `tfresnet train` with a Keras callback that marks
its phases (benchmarks/timed_train.py). It prints a table per pair with the ratio torch wall /
tfresnet wall (above 1: tfresnet is faster), the medians, and where tfresnet's time went (the
phases that timed_train prints: start-up, set-up, first step, steady training, evaluation,
epoch-end writes, the finish; what is left of the wall time is exit).
With --json_out it appends one JSON line per process and one summary line. Run nothing else
meanwhile: the comparison is only as fair as the machine is quiet. --data_dir=FOLDER uses an
MNIST-format folder for both (tfresnet reads it as `--dataset=FOLDER`; name it "...fashion..."
to keep the flips); `--dry_run` prints the commands.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PEER = "benchmarks.torch_fashion_mnist_train"
PEER_PRECISION = {"float32": "fp32", "mixed_bfloat16": "bf16"}
# tfresnet's side: `tfresnet train`, its phases marked (run from the repository root, as this).
TIMED_TRAIN = f"{shlex.quote(sys.executable)} -m benchmarks.timed_train"


def tfresnet_command(args, run_dir):
    dataset = args.data_dir or "fashion_mnist"
    return [
        *shlex.split(args.tfresnet),
        f"--dataset={dataset}",
        "--model=resnet20",
        f"--epochs={args.epochs}",
        f"--run_dir={run_dir}",
        "--overwrite",
        "--verbose=2",
        f"--precision={args.precision}",
        f"--seed={args.seed}",
        *shlex.split(args.tfresnet_args),
    ]


def peer_command(args):
    command = [
        *shlex.split(args.torch_python),
        "-m",
        PEER,
        f"--epochs={args.epochs}",
        f"--precision={PEER_PRECISION[args.precision]}",
        f"--seed={args.seed}",
    ]
    if args.data_dir:
        command.append(f"--data_dir={args.data_dir}")
        if "fashion" not in os.path.basename(os.path.normpath(args.data_dir)).lower():
            command.append("--no-flip")  # tfresnet flips only MNIST-format folders so named
    return command + shlex.split(args.peer_args)


def run_process(command, *, label, echo=True):
    """Run `command` to its end: {returncode, wall_s, peak_rss_mb, output}.

    The peak RSS is the child's own (os.wait4), not the maximum over every child this process
    ever had (what RUSAGE_CHILDREN gives). Linux starts a child's figure at its parent's size
    when forked and keeps the larger, so the driver stays small: the standard library only.
    """
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as err:
        raise RuntimeError(f"{label}: cannot run {shlex.join(command)}: {err}") from None
    lines = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stdout.write(f"[{label}] {line}")
                sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    reader.join(timeout=60)
    proc.stdout.close()
    return {
        "returncode": proc.returncode,
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "output": "".join(lines),
    }


def last_json_line(output, key):
    """The last line of `output` that parses as a JSON object holding `key`, or None."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and key in record:
                return record
    return None


class Refused(RuntimeError):
    """A child refused its command line (status 2): the driver's input was bad."""


def failed(kind, command, result):
    """The error for a child that failed: its one "error:" line when it refused its flags,
    else its status, command and last lines."""
    lines = result["output"].splitlines(keepends=True)
    refusal = [line.strip() for line in lines if line.startswith("error:")]
    if result["returncode"] == 2 and refusal:
        return Refused(f"{kind} refused the flags given: {refusal[-1].removeprefix('error: ')}")
    tail = "".join(lines[-40:])
    return RuntimeError(
        f"{kind} exited with {result['returncode']}: {shlex.join(command)}\n--- last lines ---\n"
        f"{tail}"
    )


def train_once(command, run_dir, *, label, echo=True, keep=False):
    """Run a timed_train command whose run directory is `run_dir` (then removed unless `keep`):
    (run_process's result, the run's results.json, the phases it printed)."""
    try:
        result = run_process(command, label=label, echo=echo)
        path = os.path.join(run_dir, "results.json")
        phases = last_json_line(result["output"], "phases")
        if result["returncode"] != 0 or not os.path.exists(path) or phases is None:
            raise failed("tfresnet train", command, result)
        with open(path) as f:
            return result, json.load(f), phases["phases"]
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def run_tfresnet(args, echo=True):
    run_dir = tempfile.mkdtemp(prefix="e2e-tfresnet-", dir=args.work_dir)
    load = os.getloadavg()[0]
    command = tfresnet_command(args, run_dir)
    result, results, phases = train_once(
        command, run_dir, label="tfresnet", echo=echo, keep=args.keep_runs
    )
    return {
        "kind": "tfresnet",
        "load1": round(load, 2),
        "wall_s": result["wall_s"],
        "peak_rss_mb": result["peak_rss_mb"],
        "test_error": results["final"]["test_error"],
        "train_error": results["final"]["train_error"],
        "images_per_s": results.get("train_images_per_s"),
        "fit_s": results.get("wall_time_s"),
        "precision": results.get("precision"),
        "epochs": results["schedule"]["epochs"],
        "timings": phases,
        "run_dir": run_dir if args.keep_runs else None,
    }


def run_peer(args, echo=True):
    command = peer_command(args)
    load = os.getloadavg()[0]
    result = run_process(command, label="torch", echo=echo)
    record = last_json_line(result["output"], "peer")
    if result["returncode"] != 0 or record is None:
        raise failed("the PyTorch peer", command, result)
    return {
        "kind": "torch",
        "load1": round(load, 2),
        "wall_s": result["wall_s"],
        "peak_rss_mb": result["peak_rss_mb"],
        "test_error": record["test_error"],
        "train_error": record["train_error"],
        "images_per_s": record["images_per_s"],
        "reported": record,
    }


def _num(value, fmt):
    return "-" if value is None else format(value, fmt)


def ratio(pair):
    return pair["torch"]["wall_s"] / pair["tfresnet"]["wall_s"]


def format_table(pairs):
    """Markdown: one row per pair, both processes side by side, then the medians."""
    from tfresnet import markdown  # not at the top: see run_process (the driver stays small)

    side = ["load", "{} wall s", "img/s", "test err", "peak MB"]
    header = ["pair", *(c.format(name) for name in ("tfresnet", "torch") for c in side)]

    def cells(r):
        return [
            f"{r['load1']:.2f}",
            f"{r['wall_s']:.1f}",
            _num(r["images_per_s"], ".0f"),
            _num(r["test_error"], ".2%"),
            f"{r['peak_rss_mb']:.0f}",
        ]

    rows = [
        [i, *cells(pair["tfresnet"]), *cells(pair["torch"]), f"{ratio(pair):.2f}x"]
        for i, pair in enumerate(pairs, 1)
    ]
    if pairs:
        m = summary(pairs)
        med = {
            side: {
                "load1": m[f"{side}_load1"],
                "wall_s": m[f"{side}_wall_s"],
                "images_per_s": m[f"{side}_images_per_s"],
                "test_error": m[f"{side}_test_error"],
                "peak_rss_mb": m[f"{side}_peak_rss_mb"],
            }
            for side in ("tfresnet", "torch")
        }
        rows.append(
            [
                "median",
                *cells(med["tfresnet"]),
                *cells(med["torch"]),
                f"{m['ratio_torch_over_tfresnet']:.2f}x",
            ]
        )
    return markdown.table([*header, "torch/tfresnet wall"], rows, align="r" * 12)


# tfresnet's phases (timed_train's), in the order they happen, as the breakdown names them.
PHASES = (
    ("startup_s", "start-up: interpreter, imports, flags"),
    ("setup_s", "set-up: data, model, compile, restore"),
    ("first_step_s", "first training call (tracing)"),
    ("train_s", "steady training"),
    ("eval_s", "evaluation after each epoch"),
    ("bookkeeping_s", "epoch-end writes: checkpoints, backup, logs"),
    ("train_eval_s", "evaluation pass over the training set"),
    ("final_eval_s", "final test evaluation (runs only without a test curve)"),
    ("finish_s", "model.keras, SavedModel export, results.json"),
    ("exit_s", "clean-up and process exit"),
)


def breakdown(pairs):
    """Median seconds of each tfresnet phase over the pairs, and the derived goals' figures.

    `exit_s` is the process's wall time less the phases it reported. `to_first_step_s` is
    start-up through the first training step; `bookkeeping_per_epoch` is the epoch-end writes
    as a share of an epoch's training time.
    """
    runs = [pair["tfresnet"] for pair in pairs if pair["tfresnet"].get("timings")]
    if not runs:
        return {}
    phases = {}
    for run in runs:
        timings = dict(run["timings"])
        timings["exit_s"] = run["wall_s"] - timings.get("total_s", 0.0)
        for key, _ in PHASES:
            phases.setdefault(key, []).append(timings.get(key, 0.0))
    out = {key: statistics.median(values) for key, values in phases.items()}
    out["wall_s"] = statistics.median(run["wall_s"] for run in runs)
    out["to_first_step_s"] = statistics.median(
        sum(run["timings"].get(k, 0.0) for k in ("startup_s", "setup_s", "first_step_s"))
        for run in runs
    )
    out["bookkeeping_per_epoch"] = statistics.median(
        run["timings"].get("bookkeeping_s", 0.0)
        / max(run["timings"].get("train_s", 0.0) + run["timings"].get("first_step_s", 0.0), 1e-9)
        for run in runs
    )  # the writes' share of each epoch's training time (a share, the same for every epoch)
    return out


def format_breakdown(pairs):
    """Markdown: where tfresnet's wall time went (medians over the pairs), phase by phase."""
    from tfresnet import markdown  # not at the top: see run_process (the driver stays small)

    b = breakdown(pairs)
    if not b:
        return ""
    rows = [(name, f"{b[key]:.1f}", f"{b[key] / b['wall_s']:.1%}") for key, name in PHASES]
    rows.append(("**whole process**", f"**{b['wall_s']:.1f}**", "100%"))
    lines = [markdown.table(["phase", "seconds", "share of wall time"], rows, align="lrr")]
    lines.append("")
    lines.append(
        f"Start-up to the end of the first training step: {b['to_first_step_s']:.1f} s. "
        f"Epoch-end writes: {b['bookkeeping_per_epoch']:.1%} of the training time."
    )
    return "\n".join(lines)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(pairs):
    """Medians over the pairs of every measured quantity, and of the per-pair ratio."""
    out = {"kind": "summary", "pairs": len(pairs)}
    for side in ("tfresnet", "torch"):
        for key in ("load1", "wall_s", "images_per_s", "test_error", "peak_rss_mb"):
            out[f"{side}_{key}"] = _median(pair[side][key] for pair in pairs)
    out["ratio_torch_over_tfresnet"] = _median(ratio(pair) for pair in pairs)
    out["ratios"] = [round(ratio(pair), 3) for pair in pairs]
    return out


def machine_context() -> dict:
    """Where and when a benchmark ran, for its JSON records: host, cores, start (UTC).

    The CPU's model comes from the measured runs' own records: importing tfresnet here would
    load TensorFlow into this driver, whose size every child's peak memory starts from.
    """
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        # datetime.UTC is 3.11+; setup.py allows 3.10.
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
    }


def append_json(path, records):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (what was wrong; --help for the rest)
    and status 2, as the `tfresnet` command's errors are."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser(doc):
    """The drivers' argument parser, described by the first paragraph of `doc`."""
    return OneLineParser(description=doc.split("\n\n")[0])


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=3, help="epochs of each run")
    p.add_argument("--pairs", type=int, default=3, help="tfresnet+torch pairs, alternating")
    p.add_argument("--precision", choices=sorted(PEER_PRECISION), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_dir", default=None, help="MNIST-format folder; default Fashion-MNIST")
    p.add_argument("--tfresnet", default=TIMED_TRAIN, help="runs tfresnet train, timed")
    p.add_argument("--torch_python", default=sys.executable, help="interpreter with torch")
    p.add_argument("--tfresnet_args", default="", help="extra flags for tfresnet train")
    p.add_argument("--peer_args", default="", help="extra flags for the peer (e.g. --compile)")
    p.add_argument("--torch_first", action="store_true", help="run torch first in each pair")
    p.add_argument("--work_dir", default=None, help="where the tfresnet run dirs go (tmp)")
    p.add_argument("--keep_runs", action="store_true", help="keep tfresnet's run directories")
    p.add_argument("--json_out", default=None, help="append JSON lines here")
    p.add_argument("--quiet", action="store_true", help="do not echo the processes' output")
    p.add_argument("--dry_run", action="store_true", help="print the commands and stop")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.pairs < 1:
        p.error("--epochs and --pairs must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        print(shlex.join(tfresnet_command(args, "<tmp>")))
        print(shlex.join(peer_command(args)))
        return []
    context = {
        "epochs": args.epochs,
        "precision": args.precision,
        "seed": args.seed,
        "data": args.data_dir or "fashion_mnist",
        **machine_context(),
    }
    order = ("torch", "tfresnet") if args.torch_first else ("tfresnet", "torch")
    runners = {"tfresnet": run_tfresnet, "torch": run_peer}
    pairs = []
    for i in range(1, args.pairs + 1):
        pair = {}
        for kind in order:
            print(f"== pair {i}/{args.pairs}: {kind} (load {os.getloadavg()[0]:.2f})", flush=True)
            pair[kind] = runners[kind](args, echo=not args.quiet)
            print(
                f"== {kind}: {pair[kind]['wall_s']:.1f} s, test error "
                f"{_num(pair[kind]['test_error'], '.2%')}, peak {pair[kind]['peak_rss_mb']:.0f} MB",
                flush=True,
            )
        pairs.append(pair)
        if args.json_out:
            append_json(
                args.json_out,
                [{**context, "pair": i, "ratio": round(ratio(pair), 4), **pair[k]} for k in order],
            )
    print()
    print(
        f"ResNet-20 on {context['data']}, {args.epochs} epochs, {args.precision}, "
        f"{args.pairs} pairs (order: {', '.join(order)}):\n"
    )
    print(format_table(pairs))
    if breakdown(pairs):
        print("\nWhere tfresnet's time went (medians over the pairs):\n")
        print(format_breakdown(pairs))
    result = {**context, **summary(pairs), "breakdown": breakdown(pairs)}
    if args.json_out:
        append_json(args.json_out, [result])
    return pairs


def run_main(main):
    """Run a driver's `main`; a failed run exits with its message, not a traceback."""
    try:
        main()
    except Refused as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    run_main(main)
