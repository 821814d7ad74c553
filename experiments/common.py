"""What the experiment scripts share: their flags, one run per (model, seed), tables and curves.

Every experiment trains through `tfresnet.train.train` (the library's one training path) into
`<results_dir>/<experiment>/<run>/`, a normal run directory. A finished run (its results.json
exists) is loaded instead of trained again; a finished run with the same config in another
experiment's folder is copied (results, config, history, model) instead of trained twice.

Budget: `--budget` is TrainConfig.budget, the fraction of the paper's CIFAR schedule (64k
iterations at batch 128, Sec. 4.2) with every lr boundary scaled by it. The embedded digits set
has 1,438 training images = 11 iterations per epoch at batch 128, so the paper's full schedule is
5,818 digits epochs and `--budget 0.005` is 320 iterations, rounded up to 30 whole epochs (330).
`--epochs` gives whole epochs instead.
"""

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Hashable, Iterable

import keras
import numpy as np
from absl import flags, logging

from tfresnet import cli, files, machine, train_config
from tfresnet import train as train_lib
from tfresnet.cli import config_flags
from tfresnet.runlock import RunDirInUse

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_RESULTS_DIR = os.path.join(HERE, "results")
SMOKE_RESULTS_DIR = os.path.join(DEFAULT_RESULTS_DIR, "smoke")  # git-ignored
DEFAULT_BUDGET = 0.005  # the committed budget: 320 of the paper's 64k iterations (30 digits epochs)
SMOKE_DEPTH = 8  # cifar_resnet8 / plain8: n = 1 block per stage
SMOKE_BATCH = 512  # 2 iterations per digits epoch
# A finished run has both JSON files; reusing it from another experiment's folder copies these
# (git keeps no .keras files, so a fresh checkout has the JSON and CSV only).
FINISHED_FILES = ("config.json", "results.json")
COPIED_FILES = ("model.keras", "history.csv", "config.json", "results.json")

# The training settings are TrainConfig's own flags (help, type, choices written there once);
# --budget unset means DEFAULT_BUDGET (Settings) rather than the paper's whole schedule.
TRAINING_FLAGS = config_flags.define_flags(
    flags.FLAGS,
    train_lib.TrainConfig,
    names=("dataset", "budget", "epochs", "batch_size", "precision"),
)
flags.DEFINE_integer("seeds", 1, "Runs per network (seeds 0..seeds-1); tables give mean ± std.")
flags.DEFINE_list("depths", None, "Depths to train (default: the experiment's own).")
flags.DEFINE_bool("smoke", False, "Tiny check in seconds: depth-8 nets, 1 epoch of 2 iterations.")
flags.DEFINE_string(
    "results_dir", None, "Where results go; default experiments/results (smoke: .../smoke)."
)

PRECISION_LABELS = {"mixed_bfloat16": "bf16", "mixed_float16": "fp16"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """One experiment invocation: what the flags say, with the smoke mode applied."""

    dataset: str = train_lib.TrainConfig.dataset
    budget: float | None = None  # None, and no epochs: DEFAULT_BUDGET
    epochs: int | None = None
    batch_size: int | None = None  # None: the recipe's 128
    seeds: int = 1
    depths: tuple = ()
    precision: str = train_lib.TrainConfig.precision
    smoke: bool = False
    results_dir: str | None = None

    def __post_init__(self):
        if self.budget is not None and self.epochs is not None:
            raise ValueError("Give at most one of --budget and --epochs.")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1; got {self.seeds}.")
        if self.smoke:
            object.__setattr__(self, "epochs", 1)
            object.__setattr__(self, "budget", None)
        elif self.budget is None and self.epochs is None:
            object.__setattr__(self, "budget", DEFAULT_BUDGET)
        if self.results_dir is None:
            default = SMOKE_RESULTS_DIR if self.smoke else DEFAULT_RESULTS_DIR
            object.__setattr__(self, "results_dir", default)
        object.__setattr__(self, "results_dir", os.path.abspath(self.results_dir))

    @property
    def label(self):
        """Names the schedule in run and file names: "b0.005", "e30" or "smoke"."""
        if self.smoke:
            return "smoke"
        label = f"e{self.epochs}" if self.epochs is not None else f"b{self.budget:g}"
        label += f"-bs{self.batch_size}" if self.batch_size else ""
        if self.precision != "float32":
            label += f"-{PRECISION_LABELS.get(self.precision, self.precision)}"
        return label

    @property
    def tag(self):
        """Names an experiment's table and plot: data set, schedule and number of seeds."""
        return f"{train_lib._slug(self.dataset)}-{self.label}-{self.seeds}seed"

    def describe(self):
        """How the schedule was asked for (the report adds what it came to)."""
        if self.smoke:
            return "smoke mode"
        if self.epochs is not None:
            return f"--epochs={self.epochs}"
        iterations = math.ceil(self.budget * 64_000)
        return (
            f"budget {self.budget:g} of the paper's 64k iterations at batch 128 ({iterations}), "
            "rounded up to whole epochs"
        )


def settings_from_flags(default_depths, smoke_depths=(SMOKE_DEPTH,), default_seeds=1, trains=True):
    """The Settings the flags describe; `--seeds` left unset means the experiment's default.
    An experiment that trains nothing (`trains=False`) refuses the training flags."""
    f = flags.FLAGS
    given = [name for name in TRAINING_FLAGS if f[name].present]
    if given and not trains:
        raise ValueError(
            f"This experiment trains nothing, so --{', --'.join(given)} would be ignored; "
            "it takes --depths, --seeds, --smoke and --results_dir."
        )
    smoke = f.smoke
    if f.depths and not all(d.strip().isdigit() for d in f.depths):
        raise ValueError(f"--depths takes whole numbers such as 20,56; got {','.join(f.depths)!r}.")
    depths = (
        tuple(int(d) for d in f.depths)
        if f.depths
        else tuple(smoke_depths if smoke else default_depths)
    )
    return Settings(
        dataset=f.dataset,
        budget=f.budget,
        epochs=f.epochs,
        batch_size=f.batch_size,
        seeds=f.seeds if f["seeds"].present else default_seeds,
        depths=depths,
        precision=f.precision,
        smoke=smoke,
        results_dir=f.results_dir,
    )


def run_config(settings, experiment, model, seed, shortcut=None):
    """The TrainConfig of one run, in `<results_dir>/<experiment>/<run>/`."""
    name = f"{model}{'-' + shortcut if shortcut else ''}-{train_lib._slug(settings.dataset)}"
    name += f"-{settings.label}-seed{seed}"
    return train_lib.TrainConfig(
        model=model,
        dataset=settings.dataset,
        shortcut=shortcut,
        budget=settings.budget,
        epochs=settings.epochs,
        batch_size=SMOKE_BATCH if settings.smoke else settings.batch_size,
        seed=seed,
        precision=settings.precision,
        run_dir=os.path.join(settings.results_dir, experiment, name),
        export=False,
        verbose=0 if settings.smoke else 2,  # one line per epoch in logs
    )


def _same_run(run_dir, config):
    """Whether the run in `run_dir` was started with `config` (its config.json; any run_dir).

    Fields the saved config lacks (added to TrainConfig later) are not compared.
    """
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = train_config.comparable(json.load(f))
    mine = train_config.comparable(config.identity())
    mine = {k: v for k, v in mine.items() if k != "run_dir" and k in saved}
    return {k: saved[k] for k in mine} == mine


def _finished_elsewhere(config, results_dir):
    """A finished run with `config` (but another run_dir) under `results_dir`, or None."""
    if not os.path.isdir(results_dir):
        return None
    for experiment in sorted(os.listdir(results_dir)):
        folder = os.path.join(results_dir, experiment)
        if not os.path.isdir(folder):
            continue
        for run in sorted(os.listdir(folder)):
            path = os.path.join(folder, run)
            if files.TEMP_MARK in run:  # a copy that a kill cut short
                continue
            if path == os.path.abspath(config.run_dir):
                continue
            if not all(os.path.exists(os.path.join(path, f)) for f in FINISHED_FILES):
                continue
            if _same_run(path, config):
                return path
    return None


def _copy_finished(source, config):
    """Copy the finished run `source` to `config.run_dir` whole; returns its results.

    Its config.json is the source's (only run_dir changes), not `config`: the two agree in
    every field that defines the run, and the settings it was trained with (such as
    steps_per_execution) stay those its results.json reports. The copy is made in a temporary
    folder beside the run and renamed into place, so a kill leaves no run there (the next call
    copies again), never a config.json without its results, which would look like a killed
    training and be trained again from the start.
    """
    if os.path.isdir(config.run_dir):  # no config.json: no run, at most a killed write's temps
        files.remove_stale_temps(config.run_dir)
        if os.listdir(config.run_dir):
            raise train_lib.TrainingError(
                f"{config.run_dir} holds files but no run (no config.json); remove it to reuse "
                f"the finished run {source}."
            )
        os.rmdir(config.run_dir)
    files.remove_stale_temps(os.path.dirname(config.run_dir))
    temp = files.temp_name(config.run_dir)
    os.makedirs(temp)
    for name in COPIED_FILES:
        if name not in FINISHED_FILES and os.path.exists(os.path.join(source, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(temp, name))
    saved = {}
    for name in FINISHED_FILES:
        with open(os.path.join(source, name)) as f:
            saved[name] = json.load(f)
    results = saved["results.json"]
    results["config"]["run_dir"] = config.run_dir
    results["reused_from"] = os.path.relpath(source, config.run_dir)
    files.write_json(os.path.join(temp, "results.json"), results)
    files.write_json(
        os.path.join(temp, "config.json"), {**saved["config.json"], "run_dir": config.run_dir}
    )
    os.rename(temp, config.run_dir)
    return results


def train_or_load(config: train_lib.TrainConfig, results_dir: str) -> tuple[dict, bool]:
    """The results of the run `config` describes, loaded if finished, else trained once; and
    whether this call trained it (False: reused, here or copied from another experiment)."""
    path = os.path.join(config.run_dir, "results.json")
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
        if not _same_run(config.run_dir, config):
            raise train_lib.TrainingError(
                f"{config.run_dir} holds a different finished run; remove it or pick another "
                "--results_dir."
            )
        logging.info("Reusing the finished run %s", config.run_dir)
        results["config"]["run_dir"] = config.run_dir  # where it is now, if the folder moved
        return results, False
    source = _finished_elsewhere(config, results_dir)
    if source is not None and not os.path.exists(os.path.join(config.run_dir, "config.json")):
        logging.info("Reusing %s for %s", source, config.run_dir)
        return _copy_finished(source, config), False
    logging.info("Training %s", config.run_dir)
    start = time.perf_counter()
    # `resume` continues a killed run of the same config; a fresh directory just starts.
    resume = os.path.exists(os.path.join(config.run_dir, "config.json"))
    results = train_lib.train(dataclasses.replace(config, resume=resume))
    logging.info("Trained %s in %.0f s", config.run_dir, time.perf_counter() - start)
    keras.backend.clear_session()
    return results, True


def train_or_load_each(
    keyed_configs: Iterable[tuple[Hashable, train_lib.TrainConfig]], results_dir: str
) -> tuple[dict, list]:
    """`train_or_load` each (key, config) in the order given.

    Returns ({key: [results, one per config of that key]}, [the run directories trained here,
    in order]): the runs behind an experiment's table, and which of them this call trained.
    """
    runs, trained = {}, []
    for key, config in keyed_configs:
        results, was_trained = train_or_load(config, results_dir)
        runs.setdefault(key, []).append(results)
        if was_trained:
            trained.append(config.run_dir)
    return runs, trained


def mean_std(values, scale=100.0, digits=2):
    """ "m ± s" of `values` x `scale` (sample std over seeds); just "m" for one value."""
    values = np.asarray(values, dtype=float) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def hardware(runs=()):
    """The machines in words (cores, architecture, CPU model, the features that matter): those
    the runs' training segments recorded, and this one for runs from before segments did."""
    recorded = {s.get("hardware") for r in runs for s in r.get("segments", [{}])}
    if None in recorded or not recorded:
        recorded = (recorded - {None}) | {machine.cpu_info().describe()}
    return "; ".join(sorted(recorded))


def command(script, settings, default_depths=()):
    """The command line that reproduces `settings` (flags at their defaults left out)."""
    parts = [f"python -m experiments.{script}"]
    if settings.smoke:
        parts.append("--smoke")
    if settings.dataset != "digits":
        parts.append(f"--dataset={settings.dataset}")
    if not settings.smoke:
        if settings.epochs is not None:
            parts.append(f"--epochs={settings.epochs}")
        elif settings.budget != DEFAULT_BUDGET:
            parts.append(f"--budget={settings.budget:g}")
        if settings.batch_size:
            parts.append(f"--batch_size={settings.batch_size}")
        if settings.precision != "float32":
            parts.append(f"--precision={settings.precision}")
    if settings.seeds != 1:
        parts.append(f"--seeds={settings.seeds}")
    if not settings.smoke and tuple(settings.depths) != tuple(default_depths):
        parts.append(f"--depths={','.join(str(d) for d in settings.depths)}")
    return " ".join(parts)


def write_report(settings, experiment, table, default_depths, runs, notes=""):
    """Write `<tag>.md`: data, schedule, seeds, hardware, command, training time, the table.

    `runs` are the results of every run behind the table (for the schedule and the time).
    """
    folder = os.path.join(settings.results_dir, experiment)
    os.makedirs(folder, exist_ok=True)
    runs = list(runs)
    schedule = runs[0]["schedule"]
    fit_minutes = sum(r["wall_time_s"] for r in runs) / 60
    epochs = _count(schedule["epochs"], "epoch")
    text = (
        f"Data set: {settings.dataset}. Schedule: {settings.describe()}: {epochs} = "
        f"{schedule['steps']} iterations at batch {schedule['batch_size']}. "
        f"Seeds: {settings.seeds}. Precision: {settings.precision}. Hardware: {hardware(runs)}. "
        f"Training time: {fit_minutes:.1f} min of model.fit over {_count(len(runs), 'run')} "
        "(runs shared with another experiment count in both).\n\n"
        f"Command: `{command(experiment, settings, default_depths)}`\n\n{table}\n"
    )
    if notes:
        text += f"\n{notes}\n"
    path = os.path.join(folder, f"{settings.tag}.md")
    files.write_text(path, text)  # temp file, then rename: a kill leaves the old table or the new
    return path


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def mean_curve(runs, key):
    """The per-epoch `key` curve averaged over runs (seeds), as a numpy array."""
    curves = [np.asarray(r["curves"][key], dtype=float) for r in runs]
    length = min(len(c) for c in curves)
    return np.mean([c[:length] for c in curves], axis=0)


def mean_final(runs, key):
    """The runs' (seeds') mean final `key` ("train_error", "test_error"), in %."""
    return 100 * float(np.mean([r["final"][key] for r in runs]))


def plot_curves(ax, labelled_runs, title, top=100):
    """The paper's Fig. 6 style: dashed training error, bold test error, one colour per net.

    `top` is the error axis' top in %: 100 by default, one scale for every panel, so plain and
    ResNet compare by eye; `zoomed_top` for a panel that compares how the curves end.
    """
    for i, (label, runs) in enumerate(labelled_runs):
        color = f"C{i}"
        steps = runs[0]["schedule"]["steps_per_epoch"]
        train = mean_curve(runs, "train_error") * 100
        test = mean_curve(runs, "test_error") * 100
        iterations = np.arange(1, len(train) + 1) * steps
        ax.plot(iterations, train, "--", color=color, linewidth=1)
        ax.plot(iterations[: len(test)], test, "-", color=color, linewidth=2, label=label)
    ax.set_title(title)
    ax.set_ylim(0, top)
    ax.set_xlabel("iterations")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x >= 1000 else f"{x:g}")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend(title="bold: test, dashed: train", fontsize=8, title_fontsize=8)


def zoomed_top(labelled_runs):
    """An error axis' top (%) that shows where the curves end, as the paper's Fig. 6 (0-20%)
    does: twice the largest final error, rounded up to 5 points, 5 to 100."""
    final = max(
        mean_curve(runs, key)[-1] * 100
        for _, runs in labelled_runs
        for key in ("train_error", "test_error")
    )
    return min(100, max(5, 5 * math.ceil(round(2 * final / 5, 6))))  # 7.5% is 15, not 20


def save_figure(fig, settings, experiment, tag=None):
    """Save `fig` as `<results_dir>/<experiment>/<tag>.png` (default tag: settings.tag)."""
    path = os.path.join(settings.results_dir, experiment, f"{tag or settings.tag}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_atomically(
        path, lambda target: fig.savefig(target, format="png", dpi=120, bbox_inches="tight")
    )
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def figure(ncols, nrows=1, size=(5.5, 4)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)


def run_and_print(run, default_depths, **defaults):
    """Every experiment's `main`: run it with the flags, print its table and where its plot is.

    `defaults` (smoke_depths, default_seeds) go to `settings_from_flags`.
    """
    try:
        result = run(settings_from_flags(default_depths, **defaults))
    except (KeyboardInterrupt, ValueError, OSError, train_lib.TrainingError, RunDirInUse) as err:
        # Bad flags or a stopped run: one line and the CLI's exit status, as `tfresnet` gives.
        status, message = cli.classify_error(err)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(status)
    with open(result["table"]) as f:
        print(f.read())
    print(f"Plot: {result['plot']}")
    if "trained" in result:
        print(f"Trained {len(result['trained'])} runs here; the others were finished and reused.")
