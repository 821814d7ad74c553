"""Step rate against PyTorch: benchmarks/bench.py and the PyTorch peer, paired model by model.

The one command (from the repository root, in an environment with tfresnet and torch installed,
e.g. `pip install -e '.[bench]'`):

    python -m benchmarks.paired_step_rate --pairs=3 --json_out=docs/bench/paired.jsonl
    python -m benchmarks.paired_step_rate --models=resnet20,resnet56 --precisions=float32

In each pair, for each model M, one right after the other (so both see the same machine load):

    python -m benchmarks.bench --models=M --precisions=P --nopipeline --output=<tmp>
    python -m benchmarks.torch_resnet_bench M

then the tfresnet/PyTorch ratios of training and inference images/s per model and precision
(above 1: tfresnet is faster), each pair's and their median: single runs move by 10-15% on a
shared VM, so compare medians. The bench measures each model in a fresh process (see
benchmarks/bench.py for what it times); the peer trains and runs the same networks in PyTorch
(SGD, autocast bf16, channels_last). With --json_out it appends every record of both, with the
pair's number, and one summary line. `--dry_run` prints the commands.

`--summarize` prints the same table from recorded runs instead: each argument a file of both
sides' lines (what --json_out wrote, its pairs told apart by their "pair" field), or BENCH+PEER,
a bench `--output` file and the peer's output from right after it (one pair). The ratio tables
of docs/performance.md come from:

    python -m benchmarks.paired_step_rate --summarize \
        docs/bench/2026-11-25-1808-full.jsonl+docs/bench/2026-11-25-1828-torch.jsonl \
        docs/bench/2026-11-25-1849-paired.jsonl docs/bench/2026-11-25-1911-cifar-paired.jsonl \
        docs/bench/2026-11-25-1916-cifar-paired.jsonl
"""

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

from benchmarks.end_to_end import append_json, machine_context, parser
from tfresnet import markdown

PEER = "-m benchmarks.torch_resnet_bench"
PEER_MODELS = ("resnet20", "resnet56", "resnet50")  # torch_resnet_bench.CONFIGS
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}  # the peer's names -> Keras policies


def tfresnet_command(args, model, output):
    """The bench of one model, its JSON lines written to `output`."""
    return [
        *shlex.split(args.tfresnet),
        f"--models={model}",
        f"--precisions={','.join(args.precisions)}",
        "--nopipeline",
        f"--output={output}",
        *shlex.split(args.tfresnet_args),
    ]


def peer_command(args, model):
    return [*shlex.split(args.torch_python), *shlex.split(args.peer), model]


def json_records(text):
    """The JSON objects among the lines of `text` (other lines are logs)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def peer_records(output, model, precisions):
    """The peer's lines for `model` in `precisions`, as {"kind": "peer", precision: policy}."""
    records = []
    for record in json_records(output):
        precision = PRECISIONS.get(record.get("precision"), record.get("precision"))
        if record.get("model") == model and "train_img_s" in record and precision in precisions:
            records.append({**record, "kind": "peer", "precision": precision})
    return records


def run_command(command, what, timeout=3 * 3600):
    """Run `command` to its end; its stdout, or RuntimeError with the last lines of output."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"{what} did not run: {shlex.join(command)}: {err}") from err
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RuntimeError(
            f"{what} exited with {done.returncode}: {shlex.join(command)}\n--- last lines ---\n"
            f"{tail}"
        )
    return done.stdout


def run_tfresnet(args, model):
    """The bench's records of one model: host, matmul peaks, one per precision."""
    with tempfile.TemporaryDirectory(prefix="paired-step-rate-") as folder:
        output = os.path.join(folder, "bench.jsonl")
        command = tfresnet_command(args, model, output)
        run_command(command, "benchmarks.bench")
        with open(output) as f:
            records = json_records(f.read())
    if not any(r.get("kind") == "model" for r in records):
        raise RuntimeError(f"benchmarks.bench wrote no model record: {shlex.join(command)}")
    return records


def run_peer(args, model):
    command = peer_command(args, model)
    records = peer_records(run_command(command, "the PyTorch peer"), model, args.precisions)
    if not records:
        raise RuntimeError(f"the PyTorch peer printed no rates for {model}: {shlex.join(command)}")
    return records


def matched(records):
    """{(model, precision): {"tfresnet": record, "peer": record}} of one pair, both measured."""
    ours = {(r["model"], r["precision"]): r for r in records if r.get("kind") == "model"}
    both = {}
    for peer in (r for r in records if r.get("kind") == "peer"):
        key = (peer["model"], peer["precision"])
        if key in ours:
            both[key] = {"tfresnet": ours[key], "peer": peer}
    return both


def summary(pairs):
    """Per model and precision: each pair's ratio of images/s, their median, the median rates.

    `pairs`: one list of records per pair (the bench's "model" records, "peer" records).
    """
    sides = {}
    for records in pairs:
        for key, both in matched(records).items():
            for side, record in both.items():
                sides.setdefault(key, {"tfresnet": [], "peer": []})[side].append(record)
    rows = []
    for (model, precision), side in sides.items():
        row = {"model": model, "precision": precision, "pairs": len(side["peer"])}
        for rate in ("train", "infer"):
            key = f"{rate}_img_s"
            ratios = [a[key] / b[key] for a, b in zip(side["tfresnet"], side["peer"], strict=True)]
            row[f"{rate}_ratios"] = ratios  # unrounded: the table rounds once, as it prints
            row[f"{rate}_ratio"] = statistics.median(ratios)
            for name, records in side.items():
                row[f"{name}_{key}"] = statistics.median(r[key] for r in records)
        rows.append(row)
    return rows


def recorded_pairs(spec):
    """The pairs' records in `spec`: a file with both sides' lines (one pair, or several told
    apart by their "pair" field, as --json_out writes them), or BENCH+PEER files (one pair)."""
    ours, _, peer = spec.partition("+")
    try:
        with open(ours) as f:
            records = json_records(f.read())
        if peer:
            with open(peer) as f:
                text = f.read()
            cases = [r for r in records if r.get("kind") == "model"]
            precisions = sorted({r["precision"] for r in cases})
            for model in dict.fromkeys(r["model"] for r in cases):
                records += peer_records(text, model, precisions)
    except OSError as err:
        raise RuntimeError(f"--summarize: cannot read {err.filename!r}: {err.strerror}") from None
    except (KeyError, TypeError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise RuntimeError(
            f"--summarize: {spec!r} is not bench and peer records: {err!r}"
        ) from None
    pairs = {}
    for record in records:
        pairs.setdefault(record.get("pair"), []).append(record)
    found = [pair for pair in pairs.values() if matched(pair)]
    if not found:
        raise RuntimeError(f"--summarize: {spec!r} holds no model measured by both")
    return found


def format_table(pairs):
    """Markdown: per model and precision, median images/s of both, each pair's ratio, median."""
    header = ["model", "precision"]
    for rate in ("train", "infer"):
        header += [f"tfresnet {rate} img/s", f"PyTorch {rate} img/s", f"{rate} ratios", "median"]
    rows = []
    for row in summary(pairs):
        cells = [row["model"], row["precision"]]
        for rate in ("train", "infer"):
            cells += [
                f"{row[f'tfresnet_{rate}_img_s']:.1f}",
                f"{row[f'peer_{rate}_img_s']:.1f}",
                ", ".join(f"{r:.2f}" for r in row[f"{rate}_ratios"]),
                f"**{row[f'{rate}_ratio']:.2f}x**",
            ]
        rows.append(cells)
    return markdown.table(header, rows, align="llrrlrrrlr")


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--models", default=",".join(PEER_MODELS), help="comma-separated")
    p.add_argument("--precisions", default="float32,mixed_bfloat16", help="comma-separated")
    p.add_argument("--pairs", type=int, default=3, help="rounds of tfresnet-then-peer per model")
    python = shlex.quote(sys.executable)
    p.add_argument("--tfresnet", default=f"{python} -m benchmarks.bench", help="the bench")
    p.add_argument("--tfresnet_args", default="", help="extra flags for the bench")
    p.add_argument("--torch_python", default=python, help="interpreter with torch")
    p.add_argument("--peer", default=PEER, help="peer: `PYTHON PEER MODEL` prints JSON lines")
    p.add_argument("--json_out", default=None, help="append JSON lines here")
    p.add_argument("--dry_run", action="store_true", help="print the commands and stop")
    p.add_argument(
        "--summarize", nargs="+", metavar="PAIR", help="tabulate recorded pairs, run nothing"
    )
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.precisions = [x for x in args.precisions.split(",") if x]
    bad = [x for x in args.precisions if x not in PRECISIONS.values()]
    if bad:
        p.error(f"--precisions: {bad[0]!r} has no peer; allowed: {', '.join(PRECISIONS.values())}")
    if args.peer == PEER and set(args.models) - set(PEER_MODELS):
        p.error(f"--models: the PyTorch peer has {', '.join(PEER_MODELS)}; got {args.models}")
    if args.pairs < 1 or not args.models:
        p.error("--pairs must be >= 1 and --models not empty")
    return args


def main(argv=None):
    """Run the pairs; print each ratio as it comes, then the table. Returns the pairs' records."""
    args = parse_args(argv)
    if args.summarize:
        pairs = [pair for spec in args.summarize for pair in recorded_pairs(spec)]
        try:
            table = format_table(pairs)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            raise RuntimeError(f"--summarize: a record lacks a positive rate: {err!r}") from None
        print(f"tfresnet / PyTorch images per second, {len(pairs)} recorded pairs:\n")
        print(table)
        return pairs
    if args.dry_run:
        for model in args.models:
            print(shlex.join(tfresnet_command(args, model, "TMP/bench.jsonl")))
            print(shlex.join(peer_command(args, model)))
        return []
    context = machine_context()
    pairs = []
    for i in range(1, args.pairs + 1):
        records = []
        for model in args.models:
            print(f"== pair {i}/{args.pairs}, {model} (load {os.getloadavg()[0]:.2f})", flush=True)
            new = run_tfresnet(args, model) + run_peer(args, model)
            for (name, precision), both in matched(new).items():
                ours, peer = both["tfresnet"], both["peer"]
                print(
                    f"   {name} {precision}: train {ours['train_img_s']:.1f} / "
                    f"{peer['train_img_s']:.1f} img/s, infer {ours['infer_img_s']:.1f} / "
                    f"{peer['infer_img_s']:.1f} (tfresnet / PyTorch)",
                    flush=True,
                )
            records += new
        pairs.append(records)
        if args.json_out:
            append_json(args.json_out, [{**r, "pair": i} for r in records])
    if args.json_out:
        append_json(args.json_out, [{"kind": "summary", **context, "rows": summary(pairs)}])
    print(f"\ntfresnet / PyTorch images per second, {args.pairs} pairs:\n")
    print(format_table(pairs))
    return pairs


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as err:  # which program failed: its command and last lines
        raise SystemExit(str(err)) from None
