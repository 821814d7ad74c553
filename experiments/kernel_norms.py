"""Kernel norms over training, from the runs' own curves: why plain-56 trains so slowly.

    python -m experiments.kernel_norms --dataset=fashion_mnist --budget=0.1 \
        --precision=mixed_bfloat16 --seeds=2      # committed: the four key nets, two seeds
    python -m experiments.kernel_norms --smoke    # seconds: plain-8 and ResNet-8

Trains nothing new: it reads the degradation runs of plain-d and ResNet-d (--depths, default 20
and 56; trained there first if missing). Every loss Keras reports includes the weight-decay term
R = weight_decay / 2 * ||w||^2 (w: every conv and dense kernel), so R gives ||w||^2. Runs since
the `weight_decay_loss` curve record R after each epoch: ||w||^2 is exact. For older runs the
test loss (cross-entropy + R, the same weights) bounds it: R <= test loss, since the
cross-entropy is >= 0; and R >= test loss - ln(num_classes) where the net does no worse than a
uniform guess in cross-entropy (an assumption, marked as such). An older run whose first epochs
equal, to the last digit, those of a run that records R (same net and seed, a longer schedule
with the same learning rate so far) takes the exact values from it.

Behind batch normalisation a conv kernel's scale does not change the output, and its gradient
scales as 1/||w||: a step changes the kernel's direction by about lr / ||w||^2, the effective
learning rate. Writes `results/kernel_norms/<tag>.md` (||w||^2 per epoch, the effective rate, and
how far weight decay alone would have shrunk the norm) and `<tag>.png`.
"""

import glob
import json
import math
import os

import numpy as np
from absl import app

from experiments import common
from tfresnet import data as data_lib
from tfresnet import markdown, models, recipes, rundir

EXPERIMENT = "kernel_norms"
DEPTHS = (20, 56)
KINDS = (("plain", "plain"), ("resnet", "ResNet"))
EPOCHS_SHOWN = (1, 2, 4, 7, 8, 14)  # the per-epoch tables' columns elsewhere on the page


def read_history(run_dir):
    """{column: [float or None per epoch]} of a run's history.csv."""
    return rundir.read_history(os.path.join(run_dir, "history.csv"))


def shared_epochs(mine, theirs):
    """How many first epochs two histories share to the last digit (training and test loss)."""
    count = 0
    for i in range(min(len(mine["loss"]), len(theirs["loss"]))):
        if any(mine[k][i] != theirs[k][i] for k in ("loss", "test_loss")):
            break
        count += 1
    return count


def exact_source(results, results_dir):
    """(run directory, history, epochs shared) of the run that records the decay term and
    trained the most of the same first epochs as `results` (same net, seed and data); or
    (None, None, 0)."""
    mine = read_history(results["config"]["run_dir"])
    same = ("model", "shortcut", "dataset", "seed", "precision", "batch_size")
    best = (None, None, 0)
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "*", "history.csv"))):
        path = os.path.dirname(path)
        theirs = read_history(path)
        if not any(v is not None for v in theirs.get("weight_decay_loss", [])):
            continue
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        if any(config.get(k) != results["config"].get(k) for k in same):
            continue
        shared = shared_epochs(mine, theirs)
        if shared > best[2]:
            best = (path, theirs, shared)
    return best


def norms(results, results_dir, num_classes):
    """||w||^2 after each epoch as arrays `low` and `high` (equal where `exact`), the test loss,
    and the run the exact values were borrowed from (`source`, or None)."""
    decay = results["schedule"]["weight_decay"]
    history = read_history(results["config"]["run_dir"])
    recorded = history.get("weight_decay_loss") or [None] * len(history["test_loss"])
    source, borrowed, shared = (None, None, 0)
    if not any(v is not None for v in recorded):
        source, borrowed, shared = exact_source(results, results_dir)
    low, high, exact = [], [], []
    for i, loss in enumerate(history["test_loss"]):
        term = recorded[i]
        if term is None and i < shared:
            term = borrowed["weight_decay_loss"][i]
        exact.append(term is not None)
        high.append(2 * (loss if term is None else term) / decay)
        low.append(
            high[-1] if term is not None else max(0.0, high[-1] - 2 * math.log(num_classes) / decay)
        )
    return {
        "low": np.array(low),
        "high": np.array(high),
        "exact": np.array(exact),
        "test_loss": np.array(history["test_loss"]),
        "source": source,
    }


def learning_rates(results):
    """The learning rate of every iteration of the run (its paper schedule)."""
    schedule = results["schedule"]
    recipe = recipes.get_recipe(schedule["recipe"])
    depth = results["model"]["depth"]
    lr = recipes.paper_schedule(
        recipe, schedule["steps"], depth=depth, learning_rate=schedule["learning_rate"]
    )
    steps = np.arange(schedule["steps"])
    index = np.searchsorted(np.asarray(lr.boundaries), steps, side="left")
    return np.asarray(lr.values, dtype=float)[index], recipe.momentum


def decay_alone(results, first, last):
    """The factor by which weight decay alone shrinks ||w||^2 from the end of epoch `first` to
    the end of epoch `last`: (1 - lr * wd / (1 - momentum))^2 per iteration, momentum's steady
    state (the gradient of a BN-followed kernel is orthogonal to it and can only add norm)."""
    lrs, momentum = learning_rates(results)
    per_epoch = results["schedule"]["steps_per_epoch"]
    wd = results["schedule"]["weight_decay"]
    window = lrs[first * per_epoch : last * per_epoch]
    return float(np.exp(2 * np.sum(np.log1p(-window * wd / (1 - momentum)))))


def initial_norm(results, num_classes):
    """Expected ||w||^2 at He-normal initialisation: 2 per output channel of every kernel."""
    model = models.build_model(
        results["config"]["model"],
        num_classes=num_classes,
        input_shape=tuple(results["data"]["image_shape"]),
        shortcut=results["config"].get("shortcut"),
    )
    return float(sum(2 * w.shape[-1] for w in model.weights if w.path.endswith("kernel")))


def fmt(low, high, exact):
    """A cell in thousands: "6.08" exact, "391-437" a range, "<= 10.6" an upper bound."""
    digits = 2 if high < 100_000 else 0
    if exact:
        return f"**{high / 1000:.{digits}f}**"
    if low > 0:
        return f"{low / 1000:.{digits}f}-{high / 1000:.{digits}f}"
    return f"≤ {high / 1000:.{digits}f}"


def measure(settings, runs, num_classes):
    """{(kind, depth): [per seed: `norms` plus "init", "lr_epoch" (the rate at each epoch's end),
    "first_drop_epoch" and "decay_alone" (epoch 1 to it; None if it is epoch 1)]}"""
    measured = {}
    for key, results_per_seed in runs.items():
        entries = []
        for results in results_per_seed:
            entry = norms(results, settings.results_dir, num_classes)
            entry["init"] = initial_norm(results, num_classes)
            lrs, _ = learning_rates(results)
            per_epoch = results["schedule"]["steps_per_epoch"]
            entry["lr_epoch"] = lrs[per_epoch - 1 :: per_epoch]
            lower = np.flatnonzero(lrs < lrs[per_epoch - 1])
            first_drop = int(lower[0] if lower.size else len(lrs)) // per_epoch
            entry["first_drop_epoch"] = first_drop
            entry["decay_alone"] = decay_alone(results, 1, first_drop) if first_drop > 1 else None
            entries.append(entry)
        measured[key] = entries
    return measured


def table(measured, epochs):
    shown = [e for e in EPOCHS_SHOWN if e <= epochs] or [epochs]
    header = ["net, seed", "init"] + [f"epoch {e}" for e in shown]
    rows = []
    for (kind, depth), entries in measured.items():
        title = dict(KINDS)[kind]
        for seed, entry in enumerate(entries):
            cells = [f"{entry['init'] / 1000:.2f}"]
            for e in shown:
                i = e - 1
                cells.append(fmt(entry["low"][i], entry["high"][i], entry["exact"][i]))
            rows.append([f"{title}-{depth}, seed {seed}"] + cells)
    return markdown.table(header, rows, align="l" + "r" * (len(header) - 1))


def effective_rates(measured):
    """Lines: the effective learning rate lr / ||w||^2 after epoch 1, bounds per net."""
    lines = []
    for (kind, depth), entries in measured.items():
        for seed, entry in enumerate(entries):
            lr = entry["lr_epoch"][0]
            low, high = entry["low"][0], entry["high"][0]
            fastest = lr / low if low > 0 else math.inf
            text = f"{lr / high:.2e}" if entry["exact"][0] else f"{lr / high:.2e} or more"
            if not entry["exact"][0] and math.isfinite(fastest):
                text = f"{lr / high:.2e} to {fastest:.2e}"
            lines.append(f"{dict(KINDS)[kind]}-{depth} seed {seed}: {text}")
    return "; ".join(lines)


def decay_lines(measured):
    """How ||w||^2 (or a test loss that is mostly the decay term) changed while the rate stayed
    high, against decay alone: where the two agree, the gradient steps added next to nothing to
    the kernels."""
    lines = []
    for (kind, depth), entries in measured.items():
        for seed, entry in enumerate(entries):
            last = entry["first_drop_epoch"]
            if entry["decay_alone"] is None or last > len(entry["high"]):
                continue
            what = "||w||^2" if entry["exact"][0] and entry["exact"][last - 1] else "test loss"
            if what == "test loss" and not (entry["low"][0] > 0 and entry["low"][last - 1] > 0):
                continue  # the cross-entropy may be most of the test loss: it tells nothing
            values = entry["high"] if what == "||w||^2" else entry["test_loss"]
            lines.append(
                f"{dict(KINDS)[kind]}-{depth} seed {seed}: {what} after epoch {last} / after "
                f"epoch 1 = {values[last - 1] / values[0]:.3f} (decay alone: "
                f"{entry['decay_alone']:.3f})"
            )
    return "; ".join(lines)


def plot(settings, measured):
    """Left: ||w||^2 per epoch (● exact, ▽ the test loss's upper bound, shaded: the range where
    it has a lower end). Right: lr / ||w||^2 at its fastest possible where the norm has a lower
    bound (▼: at most), else at its slowest (△: at least), or exact (●)."""
    fig, axes = common.figure(2, size=(6, 4.2))
    left, right = axes[0]
    depths = sorted({depth for _, depth in measured})
    for (kind, depth), entries in measured.items():
        color = f"C{depths.index(depth) + 2 * (kind == 'resnet')}"
        for seed, entry in enumerate(entries):
            epochs = np.arange(0, len(entry["high"]) + 1)
            high = np.concatenate([[entry["init"]], entry["high"]])
            low = np.concatenate([[entry["init"]], entry["low"]])
            exact = np.concatenate([[True], entry["exact"]])
            ranged = ~exact & (low > 0)
            lr = np.concatenate([[entry["lr_epoch"][0]], entry["lr_epoch"]])
            rate = lr / np.where(ranged, low, high)
            style = dict(color=color, linestyle="-" if seed == 0 else ":")
            label = f"{dict(KINDS)[kind]}-{depth}" + (f", seed {seed}" if len(entries) > 1 else "")
            for ax, values in ((left, high), (right, rate)):
                # Bounds and exact values on separate lines: no segment joins one to the other.
                ax.plot(epochs, np.where(exact, np.nan, values), linewidth=0.8, **style)
                ax.plot(
                    epochs[exact], values[exact], marker="o", markersize=4, label=label, **style
                )
            left.plot(
                epochs[~exact], high[~exact], "v", color=color, markersize=4, fillstyle="none"
            )
            right.plot(epochs[ranged], rate[ranged], "v", color=color, markersize=4)
            bound = ~exact & ~ranged
            right.plot(epochs[bound], rate[bound], "^", color=color, markersize=4, fillstyle="none")
            if ranged.any():
                left.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)
    left.set_ylabel("||w||², all kernels (log)")
    left.set_title("kernel norm: ● exact, ▽ at most (test loss)", fontsize=10)
    right.set_ylabel("lr / ||w||² (log)")
    right.set_title("effective learning rate: ● exact, ▼ at most, △ at least", fontsize=10)
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_xlabel("epoch (0: initialisation, He-normal expectation)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return common.save_figure(fig, settings, EXPERIMENT)


def run(settings):
    from experiments import degradation

    runs, trained = degradation.train_nets(settings)
    info = data_lib.load_data(settings.dataset).info
    measured = measure(settings, runs, info.num_classes)
    epochs = min(len(e["high"]) for entries in measured.values() for e in entries)
    png = plot(settings, measured)
    notes = (
        "||w||^2 in thousands, all conv and dense kernels together, after each epoch: **bold** "
        "exact (2 x the recorded weight-decay term / weight decay, or the same epochs of a run "
        "that records it); a range from the test loss (upper end: the cross-entropy is >= 0; "
        f"lower end: assumes a test cross-entropy of at most ln {info.num_classes}, a uniform "
        "guess's); '≤' where only the upper end exists. init: the He-normal expectation, 2 per "
        "output channel.\n\n"
        f"Effective learning rate lr / ||w||^2 after epoch 1: {effective_rates(measured)}."
    )
    if decay_lines(measured):
        notes += f"\n\nWhile the learning rate is at its first value: {decay_lines(measured)}."
    borrowed = [
        f"{dict(KINDS)[kind]}-{depth} seed {seed}: epochs 1-{int(entry['exact'].sum())} from "
        f"{os.path.relpath(entry['source'], settings.results_dir)} (identical losses so far)"
        for (kind, depth), entries in measured.items()
        for seed, entry in enumerate(entries)
        if entry["source"]
    ]
    if borrowed:
        notes += f"\n\nExact values borrowed: {'; '.join(borrowed)}."
    report = common.write_report(
        settings,
        EXPERIMENT,
        table(measured, epochs),
        DEPTHS,
        [r for rs in runs.values() for r in rs],
        notes,
    )
    return {"table": report, "plot": png, "norms": measured, "trained": trained}


def main(argv):
    del argv
    common.run_and_print(run, DEPTHS)


if __name__ == "__main__":
    app.run(main)
