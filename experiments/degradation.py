"""The degradation problem (paper Fig. 1 and Fig. 6): deeper plain nets train worse, ResNets don't.

    python -m experiments.degradation              # committed: digits, budget 0.005 (30 epochs)
    python -m experiments.degradation --smoke      # seconds: plain-8 and ResNet-8, 2 iterations
    python -m experiments.degradation --dataset=cifar10 --budget=1 --seeds=5   # the paper's

Trains plain-d and ResNet-d (option A shortcuts) for d in --depths (default 20, 32, 44, 56) with
the same recipe, then writes `results/degradation/<tag>.md` (final training and test error per
net, mean ± std over seeds) and `<tag>.png` (left plain, right ResNet; dashed lines training
error, bold lines test error, as in Fig. 6). Flags and budget: experiments/common.py.
"""

from absl import app

from experiments import common
from experiments import depth as depth_lib
from tfresnet import markdown

EXPERIMENT = "degradation"
DEPTHS = (20, 32, 44, 56)


def train_nets(settings, kinds=("plain", "resnet")):
    """{(kind, depth): [results per seed]} for every net of the experiment, in `kinds` order,
    and the run directories trained (not reused) here.

    Trained ResNets first, then plain nets, each seed before the next: a run cut short by the
    end of a session has the comparisons that matter most.
    """
    runs, trained = common.train_or_load_each(
        (
            ((kind, depth), common.run_config(settings, EXPERIMENT, f"{kind}{depth}", seed))
            for seed in range(settings.seeds)
            for kind in sorted(kinds, key=lambda k: k != "resnet")
            for depth in settings.depths
        ),
        settings.results_dir,
    )
    return {(k, d): runs[k, d] for k in kinds for d in settings.depths}, trained


def table(runs):
    rows = []
    for (kind, depth), results in runs.items():
        paper = depth_lib.PAPER.get(depth, (None, "-"))[1] if kind == "resnet" else "-"
        rows.append(
            (
                f"{'plain' if kind == 'plain' else 'ResNet'}-{depth}",
                f"{results[0]['model']['params']:,}",
                common.mean_std([r["final"]["train_error"] for r in results]),
                common.mean_std([r["final"]["test_error"] for r in results]),
                paper,
            )
        )
    return markdown.table(
        ["net", "params", "training error (%)", "test error (%)", "paper: CIFAR-10 test error (%)"],
        rows,
        align="lrrrr",
    )


def verdict(runs, depths):
    """One line per family: the deepest net's training error against the shallowest's."""
    if len(depths) < 2:
        return ""
    lines = []
    shallow, deep = min(depths), max(depths)
    for kind, title in (("plain", "plain"), ("resnet", "ResNet")):
        errors = {d: common.mean_final(runs[kind, d], "train_error") for d in (shallow, deep)}
        change = errors[deep] - errors[shallow]
        train_size = runs[kind, deep][0]["data"]["sizes"]["train"]
        images = round(change / 100 * train_size)
        lines.append(
            f"{title}-{deep} minus {title}-{shallow}, final training error: {change:+.2f} points "
            f"({images:+d} of {train_size:,} training images; "
            f"{'deeper is worse' if change > 0 else 'deeper is no worse'})."
        )
    return "\n".join(lines)


def run(settings):
    """Train (or reuse) every net; write the table and the plot. Returns their paths and runs."""
    runs, trained = train_nets(settings)
    fig, axes = common.figure(2)
    for ax, kind, title in zip(axes[0], ("plain", "resnet"), ("plain", "ResNet"), strict=True):
        labelled = [(f"{title}-{d}", runs[kind, d]) for d in settings.depths]
        common.plot_curves(ax, labelled, f"{title} ({settings.dataset})")
    plot = common.save_figure(fig, settings, EXPERIMENT)
    report = common.write_report(
        settings,
        EXPERIMENT,
        table(runs),
        DEPTHS,
        [r for rs in runs.values() for r in rs],
        verdict(runs, settings.depths),
    )
    return {"table": report, "plot": plot, "runs": runs, "trained": trained}


def main(argv):
    del argv
    common.run_and_print(run, DEPTHS)


if __name__ == "__main__":
    app.run(main)
