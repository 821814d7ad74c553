"""The medians of recorded A/B pairs: `python -m benchmarks.ab_table FILE.jsonl [...]`.

Reads the JSON lines that `train_ab.py` and `bench_ab.py` append with --json_out (one line a
pair), groups them by comparison (the flags both runs shared, a's and b's) and prints one
markdown row per comparison and rate: the pairs, a's and b's median and the median of b over a.
Records written before the settings were recorded say "(not recorded)" for a and b.
"""

import json
import statistics
import sys

from benchmarks.end_to_end import parser
from benchmarks.train_ab import label, speedup
from tfresnet import markdown

RATES = (
    ("images_per_s", "training img/s"),
    ("images_per_cpu_s", "training img/CPU-s"),
    ("infer_images_per_s", "inference img/s"),
)
UNKNOWN = "(not recorded)"


def read_records(paths):
    """The pair records of the files; ValueError naming the file and line of a bad one."""
    records = []
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    records.append(checked(line, f"{path}:{number}"))
    if not records:
        raise ValueError(f"{', '.join(paths)} holds no A/B pair records")
    return records


def checked(line, where):
    """The pair record on `line`: a JSON object whose a and b hold positive rates."""
    try:
        record = json.loads(line)
    except ValueError as err:
        raise ValueError(f"{where}: not JSON ({err})") from None
    sides = [record.get(side) if isinstance(record, dict) else None for side in "ab"]
    if not all(isinstance(side, dict) for side in sides):
        raise ValueError(f"{where}: not an A/B pair record (no a and b measurements)")
    for side in sides:
        for key, _ in RATES:
            value = side.get(key, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{where}: {key} must be a positive number; got {value!r}")
    return record


def comparison(record):
    """What a pair record compared: (both's flags, a's, b's, train_ab's model and data set)."""
    fields = ("flags", "a_flags", "b_flags", "model", "dataset")
    return tuple(record.get(name, "" if name == "flags" else None) for name in fields)


def comparisons(records):
    """{comparison: [pair records]}, in the order first seen."""
    groups = {}
    for record in records:
        groups.setdefault(comparison(record), []).append(record)
    return groups


def format_table(records):
    header = ["both", "a", "b", "pairs", "rate", "a, median", "b, median", "b / a, median"]
    rows = []
    for (flags, a, b, model, dataset), pairs in comparisons(records).items():
        both = " ".join(
            x
            for x in (flags, model and f"--model={model}", dataset and f"--dataset={dataset}")
            if x
        )
        settings = [label(both), *(UNKNOWN if x is None else label(x) for x in (a, b))]
        for key, unit in RATES:
            if not all(key in pair["a"] and key in pair["b"] for pair in pairs):
                continue
            medians = [statistics.median(pair[side][key] for pair in pairs) for side in "ab"]
            ratio = statistics.median(speedup(pair, key) for pair in pairs)
            rows.append(
                [*settings, len(pairs), unit, f"{medians[0]:.1f}", f"{medians[1]:.1f}"]
                + [f"{ratio:.3f}x"]
            )
    return markdown.table(header, rows, align="lllrlrrr")


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("files", nargs="+", help="JSON lines of train_ab.py or bench_ab.py")
    args = p.parse_args(argv)
    try:
        records = read_records(args.files)
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        sys.exit(f"error: {err}")
    print(format_table(records))


if __name__ == "__main__":
    main()
