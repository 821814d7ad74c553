"""Error against depth (paper Table 6): ResNet-20, 32, 44, 56, 110 (and 1202 if you can afford it).

    python -m experiments.depth                    # committed: digits, budget 0.005 (30 epochs)
    python -m experiments.depth --smoke            # seconds: ResNet-8, 2 iterations
    python -m experiments.depth --depths=20,32,44,56,110,1202 --dataset=cifar10 --budget=1

Trains ResNet-d (option A) for d in --depths with the paper's CIFAR recipe (ResNet-110 and deeper
start with 0.01 for the first 400 x (iterations trained / 64k), e.g. 41 at budget 0.1, as the
paper's warm-up). Writes `results/depth/<tag>.md` (layers, parameters, training and test error, the
paper's CIFAR-10 numbers beside them) and `<tag>.png` (curves, their error axis zoomed to where
they end as in the paper's Fig. 6; final error against depth). Flags: common.py.
"""

from absl import app

from experiments import common
from tfresnet import markdown

EXPERIMENT = "depth"
DEPTHS = (20, 32, 44, 56, 110)
# Paper Table 6, CIFAR-10 test error (%) and parameters; 110 is "best (mean ± std over 5 runs)".
PAPER = {
    20: ("0.27M", "8.75"),
    32: ("0.46M", "7.51"),
    44: ("0.66M", "7.17"),
    56: ("0.85M", "6.97"),
    110: ("1.7M", "6.43 (6.61 ± 0.16)"),
    1202: ("19.4M", "7.93"),
}


def train_nets(settings):
    """{depth: [results per seed]}, and the run directories trained (not reused) here."""
    return common.train_or_load_each(
        (
            (depth, common.run_config(settings, EXPERIMENT, f"resnet{depth}", seed))
            for depth in settings.depths
            for seed in range(settings.seeds)
        ),
        settings.results_dir,
    )


def table(runs):
    rows = []
    for depth, results in runs.items():
        paper_params, paper_error = PAPER.get(depth, ("-", "-"))
        rows.append(
            (
                f"ResNet-{depth}",
                f"{results[0]['model']['params']:,}",
                common.mean_std([r["final"]["train_error"] for r in results]),
                common.mean_std([r["final"]["test_error"] for r in results]),
                f"{sum(r['wall_time_s'] for r in results) / len(results):.0f}",
                paper_params,
                paper_error,
            )
        )
    return markdown.table(
        [
            "net",
            "params",
            "training error (%)",
            "test error (%)",
            "training time (s)",
            "paper: params",
            "paper: CIFAR-10 test error (%)",
        ],
        rows,
        align="lrrrrrr",
    )


def run(settings):
    """Train (or reuse) every net; write the table and the plot. Returns their paths and runs."""
    runs, trained = train_nets(settings)
    fig, axes = common.figure(2)
    labelled = [(f"ResNet-{d}", runs[d]) for d in settings.depths]
    common.plot_curves(
        axes[0][0], labelled, f"ResNets ({settings.dataset})", top=common.zoomed_top(labelled)
    )
    ax = axes[0][1]
    for key, style, label in (("train_error", "o--", "training"), ("test_error", "s-", "test")):
        errors = [common.mean_final(runs[d], key) for d in settings.depths]
        ax.plot(settings.depths, errors, style, label=label)
    ax.set_xscale("log")
    ax.set_xticks(settings.depths, [str(d) for d in settings.depths])
    ax.minorticks_off()
    ax.set_xlabel("layers")
    ax.set_ylabel("final error (%)")
    ax.set_title("final error against depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
