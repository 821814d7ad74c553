"""Time to accuracy: `tfresnet train` as whole processes, a recipe over seeds, and (--ablate)
the recipe with each of its tricks switched off in turn, Bag-of-Tricks style.

    python -m benchmarks.time_to_accuracy --recipe=fast --seeds=0,1,2 --validation_size=5000 \\
        --target=0.94 --train_flags=--precision=mixed_bfloat16 \\
        --output_dir=experiments/results/time_to_accuracy/fast [--ablate]

Each run is `python -m tfresnet.cli train --dataset=D --model=M --recipe=R --seed=S
--validation_size=V --run_dir=<temporary> --verbose=2 [--train_flags] [the variant's flags]`,
one after the other. Per run it records: the wall time of the process from spawn to exit
(start-up, data, training, evaluation, saving, export), the training time (results.json
`wall_time_s`), the final test and validation accuracy (results.json: the final model's, after
the moving average and flip averaging where the recipe has them), the first epoch whose
validation accuracy (history.csv, measured after each epoch on the raw weights, one view)
reached --target and the process's elapsed time when that epoch was committed (history.csv
watched every POLL_S seconds), and the 1-minute load average just before the run and, sampled
every POLL_S seconds, during it (mean and max). The validation split is held out of the
training images; the test set is measured once, at the end of each run, and never chooses.

Written into --output_dir: results.json (every run, the medians per variant, the date, the
machine, the command), results.md (the same as tables, `tfresnet.markdown.table`) and, per
run, runs/<variant>-seed<S>/ with the run's config.json, history.csv and results.json.
--ablate's variants are `recipes.tricks(recipe)`: each setting where the recipe differs from
the paper's CIFAR recipe, set back to the paper's value; --variant=NAME=FLAGS adds a row (e.g.
--variant="ema=--ema_momentum=0.99"). --dry_run prints the commands.
"""

import datetime
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

import benchmarks
from benchmarks.end_to_end import run_process
from tfresnet import files, machine, markdown, recipes, rundir

POLL_S = 1.0  # how often the history file and the load average are read during a run
TRAIN = f"{shlex.quote(sys.executable)} -m tfresnet.cli train"


def define_flags(fv):
    from absl import flags

    flags.DEFINE_string("recipe", "fast", "tfresnet train's --recipe.", flag_values=fv)
    flags.DEFINE_string("dataset", "fashion_mnist", "tfresnet train's --dataset.", flag_values=fv)
    flags.DEFINE_string("model", "resnet20", "tfresnet train's --model.", flag_values=fv)
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds, one run each per variant.", flag_values=fv)
    flags.DEFINE_float(
        "validation_size",
        5000,
        "Training images held out for validation (count, or fraction if < 1).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "target", 0.94, "Validation accuracy whose first crossing is timed.", flag_values=fv
    )
    flags.DEFINE_string(
        "train_flags", "", "More tfresnet train flags for every run (one string).", flag_values=fv
    )
    flags.DEFINE_bool(
        "ablate", False, "Also run the recipe with each trick switched off.", flag_values=fv
    )
    flags.DEFINE_multi_string(
        "variant", [], "NAME=FLAGS: one more row, the recipe with these flags.", flag_values=fv
    )
    flags.DEFINE_string("output_dir", None, "Where results.json/.md and runs/ go.", flag_values=fv)
    flags.DEFINE_string("tfresnet", TRAIN, "The training command.", flag_values=fv)
    flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.", flag_values=fv)


def trick_flag(name: str, value) -> str:
    """The `tfresnet train` flag that sets field `name` to `value` (`--noname` for False)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def variants(recipe: str, ablate: bool, extra=()) -> list:
    """[(name, flags)]: the recipe, then with --ablate each trick off (`recipes.tricks`), then
    each NAME=FLAGS of `extra`."""
    rows = [("recipe", [])]
    if ablate:
        off = recipes.tricks(recipes.get_recipe(recipe))
        rows += [(f"no {name}", [trick_flag(name, value)]) for name, value in off.items()]
    for item in extra:
        name, sep, flags = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--variant must be NAME=FLAGS; got {item!r}.")
        rows.append((name.strip(), shlex.split(flags)))
    return rows


def command(fv, seed, run_dir, variant_flags) -> list:
    return [
        *shlex.split(fv.tfresnet),
        f"--dataset={fv.dataset}",
        f"--model={fv.model}",
        f"--recipe={fv.recipe}",
        f"--seed={seed}",
        f"--validation_size={fv.validation_size:g}",
        f"--run_dir={run_dir}",
        "--verbose=2",
        *shlex.split(fv.train_flags),
        *variant_flags,
    ]


class Watcher:
    """Samples, every POLL_S seconds while a run goes on, the 1-minute load average and the
    number of epochs in its history.csv: when each epoch was committed, in seconds since
    `start`."""

    def __init__(self, run_dir: str, start: float):
        self.history = os.path.join(run_dir, "history.csv")
        self.start = start
        self.loads: list[float] = []
        self.committed: list[float] = []  # elapsed seconds at which epoch i + 1 was seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()  # the last epochs, if the run ended between two samples

    def _sample(self):
        self.loads.append(os.getloadavg()[0])
        try:
            rows = len(rundir.read_history_rows(self.history))
        except (OSError, ValueError):
            return
        now = time.perf_counter() - self.start
        self.committed += [now] * (rows - len(self.committed))

    def _watch(self):
        while not self._stop.wait(POLL_S):
            self._sample()


def first_crossing(val_accuracy: list, target: float):
    """The first 1-based epoch whose validation accuracy is >= `target`, or None."""
    for epoch, value in enumerate(val_accuracy, 1):
        if value is not None and value >= target:
            return epoch
    return None


def run_one(fv, variant, flags, seed, output_dir) -> dict:
    """One `tfresnet train` process: its record, its files copied under runs/."""
    temp = tempfile.mkdtemp(prefix="tta-")
    try:
        run_dir = os.path.join(temp, "run")
        argv = command(fv, seed, run_dir, flags)
        load_before = os.getloadavg()[0]
        with Watcher(run_dir, time.perf_counter()) as watcher:
            result = run_process(argv, label=f"{variant} seed {seed}")
        record = {
            "variant": variant,
            "flags": flags,
            "seed": seed,
            "command": shlex.join(argv),
            "returncode": result["returncode"],
            "wall_s": result["wall_s"],
            "load1_before": round(load_before, 2),
            "load1_during_mean": round(statistics.fmean(watcher.loads), 2),
            "load1_during_max": round(max(watcher.loads), 2),
        }
        if result["returncode"] != 0:
            tail = result["output"].strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{variant} seed {seed} exited {result['returncode']}: {tail[0]}")
        results = files.read_json(os.path.join(run_dir, rundir.RESULTS))
        rows = rundir.read_history_rows(os.path.join(run_dir, "history.csv"))
        crossed = first_crossing([row.get("val_accuracy") for row in rows], fv.target)
        final = results["final"]
        record.update(
            train_s=round(results["wall_time_s"], 3),
            epochs=len(rows),
            test_accuracy=None if final["test_error"] is None else 1 - final["test_error"],
            val_accuracy=None if final["val_error"] is None else 1 - final["val_error"],
            target_epoch=crossed,
            target_elapsed_s=(
                round(watcher.committed[crossed - 1], 1)
                if crossed and len(watcher.committed) >= crossed
                else None
            ),
        )
        keep = os.path.join(output_dir, "runs", f"{variant.replace(' ', '_')}-seed{seed}")
        files.makedirs(keep)
        for name in ("config.json", "history.csv", rundir.RESULTS):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(keep, name))
        return record
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # a temporary folder of our own


MEASURES = (
    "wall_s",
    "train_s",
    "test_accuracy",
    "val_accuracy",
    "target_epoch",
    "target_elapsed_s",
)


def medians(records: list) -> list:
    """One summary per variant, in order: its runs and each measure's median over them (over
    the runs that reached the target, for the two target measures; None if none did)."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        runs = [r for r in records if r["variant"] == variant]
        summary = {"variant": variant, "flags": runs[0]["flags"], "runs": len(runs)}
        for key in MEASURES:
            values = [r[key] for r in runs if r.get(key) is not None]
            summary[key] = statistics.median(values) if values else None
        summary["reached_target"] = sum(r.get("target_epoch") is not None for r in runs)
        out.append(summary)
    return out


def _cell(value, kind=""):
    if value is None:
        return "-"
    if kind == "%":
        return f"{100 * value:.2f}"
    if kind == "g":  # an epoch, or the median of two
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def tables(report: dict) -> str:
    """results.md: the medians per variant, then every run, with the date, machine and load."""
    target = report["target"]
    head = [
        f"# Time to accuracy: {report['model']} on {report['dataset']}, recipe {report['recipe']}",
        "",
        f"{report['date']}, {report['machine']}. Command: `{report['command']}`.",
        f"Validation: {report['validation_size']:g} training images held out; the target is "
        f"{100 * target:g}% validation accuracy; the test set is measured once per run, at its "
        "end. Load: the 1-minute load average before each run and during it (mean).",
        "",
    ]
    summary = markdown.table(
        [
            "variant",
            "flags",
            "runs",
            "wall s",
            "train s",
            "test acc %",
            "val acc %",
            f"epoch to {100 * target:g}%",
            "s to target",
            "reached",
        ],
        [
            (
                s["variant"],
                " ".join(s["flags"]) or "-",
                s["runs"],
                _cell(s["wall_s"]),
                _cell(s["train_s"]),
                _cell(s["test_accuracy"], "%"),
                _cell(s["val_accuracy"], "%"),
                _cell(s["target_epoch"], "g"),
                _cell(s["target_elapsed_s"]),
                f"{s['reached_target']}/{s['runs']}",
            )
            for s in report["medians"]
        ],
        align="llrrrrrrrr",
    )
    runs = markdown.table(
        [
            "variant",
            "seed",
            "wall s",
            "train s",
            "epochs",
            "test acc %",
            "val acc %",
            "epoch to target",
            "s to target",
            "load before",
            "load during",
        ],
        [
            (
                r["variant"],
                r["seed"],
                _cell(r["wall_s"]),
                _cell(r["train_s"]),
                r["epochs"],
                _cell(r["test_accuracy"], "%"),
                _cell(r["val_accuracy"], "%"),
                _cell(r["target_epoch"]),
                _cell(r["target_elapsed_s"]),
                _cell(r["load1_before"]),
                _cell(r["load1_during_mean"]),
            )
            for r in report["runs"]
        ],
        align="lrrrrrrrrrr",
    )
    return "\n".join([*head, "Medians:", "", summary, "", "Each run:", "", runs, ""])


def given_flags(fv) -> list:
    """The flags given on the command line, as `--name=value`, in the order defined."""
    names = [name for name in fv if fv[name].present and name in DEFINED]
    return [fv[name].serialize() for name in names]


DEFINED = (
    "recipe",
    "dataset",
    "model",
    "seeds",
    "validation_size",
    "target",
    "train_flags",
    "ablate",
    "variant",
    "output_dir",
    "tfresnet",
    "dry_run",
)


def body(fv):
    if not fv.output_dir:
        raise ValueError("--output_dir is required (where results.json, results.md go).")
    if not 0 < fv.target <= 1:
        raise ValueError(f"--target must be a validation accuracy in (0, 1]; got {fv.target}.")
    if fv.validation_size <= 0:
        raise ValueError("--validation_size must be > 0: the target is a validation accuracy.")
    seeds = [int(s) for s in fv.seeds]
    recipes.get_recipe(fv.recipe)  # an unknown name lists the known ones
    rows = variants(fv.recipe, fv.ablate, fv.variant)
    if fv.dry_run:
        for name, flags in rows:
            for seed in seeds:
                print(f"{name}: {shlex.join(command(fv, seed, '<temporary>', flags))}")
        return
    files.makedirs(fv.output_dir)
    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.cpu_info().describe(),
        "command": shlex.join(["python", "-m", "benchmarks.time_to_accuracy", *given_flags(fv)]),
        "recipe": fv.recipe,
        "dataset": fv.dataset,
        "model": fv.model,
        "validation_size": fv.validation_size,
        "target": fv.target,
        "runs": [],
    }
    for name, flags in rows:
        for seed in seeds:
            report["runs"].append(run_one(fv, name, flags, seed, fv.output_dir))
            report["medians"] = medians(report["runs"])
            # Written after every run: a long measurement cut short keeps what it measured.
            files.write_json(os.path.join(fv.output_dir, "results.json"), report)
            files.write_text(os.path.join(fv.output_dir, "results.md"), tables(report))
    print("\n" + tables(report))


def main(argv=None) -> int:
    """`python -m benchmarks.time_to_accuracy [flags]`; returns the exit status (2: bad flags)."""
    return benchmarks.run("time_to_accuracy", define_flags, body, argv)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    sys.exit(main())
