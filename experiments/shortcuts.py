"""Identity vs projection shortcuts (paper Table 3): options A, B, C and no shortcut at one depth.

    python -m experiments.shortcuts                # committed: digits, ResNet-20, budget 0.005
    python -m experiments.shortcuts --smoke        # seconds: depth 8, 2 iterations
    python -m experiments.shortcuts --depths=32 --dataset=cifar10 --budget=1 --seeds=5

At each depth in --depths (default 20): the plain net (no shortcut), A (identity, zero-padded
where dimensions grow: no parameters), B (projections only where dimensions grow) and C (a
projection on every block). Writes `results/shortcuts/<tag>.md` (parameters, training and test
error, mean ± std over seeds) and `<tag>.png` (their curves). Flags and budget: common.py.
"""

from absl import app

from experiments import common
from tfresnet import markdown

EXPERIMENT = "shortcuts"
DEPTHS = (20,)
OPTIONS = ("none", "A", "B", "C")
# Paper Table 3: ImageNet ResNet-34, 10-crop top-1 error (%); a different data set and depth.
PAPER_TOP1 = {"none": 28.54, "A": 25.03, "B": 24.52, "C": 24.19}


def train_nets(settings):
    """{(depth, option): [results per seed]}, and the run directories trained (not reused) here.

    "none" is the plain net (shared with degradation).
    """

    def configs():
        for depth in settings.depths:
            for option in OPTIONS:
                model = f"plain{depth}" if option == "none" else f"resnet{depth}"
                # A is the CIFAR default: left implicit, so the run is degradation's ResNet.
                shortcut = None if option in ("none", "A") else option
                for seed in range(settings.seeds):
                    yield (
                        (depth, option),
                        common.run_config(settings, EXPERIMENT, model, seed, shortcut),
                    )

    return common.train_or_load_each(configs(), settings.results_dir)


def table(runs):
    rows = []
    for (depth, option), results in runs.items():
        rows.append(
            (
                f"{'plain' if option == 'none' else 'ResNet'}-{depth}",
                option,
                f"{results[0]['model']['params']:,}",
                common.mean_std([r["final"]["train_error"] for r in results]),
                common.mean_std([r["final"]["test_error"] for r in results]),
                f"{PAPER_TOP1[option]:.2f}",
            )
        )
    return markdown.table(
        [
            "net",
            "shortcut",
            "params",
            "training error (%)",
            "test error (%)",
            "paper: ResNet-34 ImageNet top-1 (%)",
        ],
        rows,
        align="lcrrrr",
    )


def run(settings):
    """Train (or reuse) every net; write the table and the plot. Returns their paths and runs."""
    runs, trained = train_nets(settings)
    fig, axes = common.figure(len(settings.depths))
    for ax, depth in zip(axes[0], settings.depths, strict=True):
        labelled = [(option, runs[depth, option]) for option in OPTIONS]
        common.plot_curves(ax, labelled, f"shortcuts at depth {depth} ({settings.dataset})")
    plot = common.save_figure(fig, settings, EXPERIMENT)
    report = common.write_report(
        settings, EXPERIMENT, table(runs), DEPTHS, [r for rs in runs.values() for r in rs]
    )
    return {"table": report, "plot": plot, "runs": runs, "trained": trained}


def main(argv):
    del argv
    common.run_and_print(run, DEPTHS)


if __name__ == "__main__":
    app.run(main)
