"""Layer responses (paper Fig. 7): residual functions are closer to zero than plain layers.

    python -m experiments.layer_responses          # committed: digits, budget 0.005 (30 epochs)
    python -m experiments.layer_responses --smoke  # seconds: plain-8 and ResNet-8
    python -m experiments.layer_responses --dataset=cifar10 --budget=1 --depths=20,56,110

For the nets of Fig. 6 (plain-d and ResNet-d, d in --depths, default 20 and 56; the runs are the
degradation experiment's, reused when finished), the standard deviation of every 3x3 layer's
output after its BN and before the ReLU / addition, on the test set in inference mode. Writes
`results/layer_responses/<tag>.md` (mean and median std per net) and `<tag>.png` (top: by layer
index; bottom: sorted by magnitude, as Fig. 7; dashed plain, solid ResNet, one colour per depth,
log scale). With several seeds, each layer's std is the mean over seeds.
"""

import functools
import os
import re

import keras
import numpy as np
from absl import app

from experiments import common
from tfresnet import data as data_lib
from tfresnet import files, markdown, pipeline

EXPERIMENT = "layer_responses"
RESPONSES = "layer_responses.json"  # a run's measured responses, beside its results.json
DEPTHS = (20, 56)
_BLOCK_BN = re.compile(r"^stage(\d+)_block(\d+)_bn(\d+)$")


def response_layer_names(model):
    """The BN layers right after each 3x3 conv, in network order: the stem, then every block's.

    Only post-activation nets (the paper's): in pre-activation blocks the BN comes before its conv.
    """
    layers = {layer.name: layer for layer in model.layers}
    if "stem_bn" not in layers:
        raise ValueError(
            f"{model.name} has no stem_bn: layer responses need a post-activation net "
            "(preact=False), whose BNs follow their convs."
        )
    found = []
    for name in layers:
        match = _BLOCK_BN.match(name)
        if match is None:
            continue
        conv = layers.get(name.replace("_bn", "_conv"))
        if conv is not None and tuple(conv.kernel_size) == (3, 3):
            found.append((tuple(int(g) for g in match.groups()), name))
    stem = [] if tuple(layers["stem_conv"].kernel_size) != (3, 3) else ["stem_bn"]
    return stem + [name for _, name in sorted(found)]


def layer_responses(model, images, batch_size=128):
    """{BN layer name: std of its output}, one per 3x3 conv layer, in network order.

    `images` is an array of raw images (what the model takes) or a tf.data.Dataset of batches of
    images or (images, labels). Each layer's std is taken per channel over images and positions,
    then averaged over channels; the model runs in inference mode (BN moving statistics).
    """
    names = response_layer_names(model)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    if isinstance(images, np.ndarray):
        batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    else:
        batches = (b[0] if isinstance(b, tuple | list) else b for b in images)
    count, sums, squares = 0, None, None
    for batch in batches:
        outputs = probe(batch, training=False)
        flat = [np.asarray(o, dtype=np.float64).reshape(-1, o.shape[-1]) for o in outputs]
        if sums is None:
            sums = [np.zeros(f.shape[-1]) for f in flat]
            squares = [np.zeros(f.shape[-1]) for f in flat]
        for i, f in enumerate(flat):
            sums[i] += f.sum(axis=0)
            squares[i] += np.square(f).sum(axis=0)
        count += len(batch)
    if not count:
        raise ValueError("layer_responses needs at least one image.")
    responses = {}
    for name, s, q, out in zip(names, sums, squares, probe.outputs, strict=True):
        n = count * out.shape[1] * out.shape[2]  # images x positions
        variance = np.maximum(q / n - np.square(s / n), 0.0)
        responses[name] = float(np.sqrt(variance).mean())
    return responses


def run_responses(run_dir, dataset, test):
    """[std per 3x3 layer] of the trained model in `run_dir`, measured once and kept beside it.

    The measurement goes to `run_dir/layer_responses.json`, which git keeps (the `.keras` file
    it comes from is not kept), so a fresh clone re-draws the figure without retraining.
    """
    saved_path = os.path.join(run_dir, RESPONSES)
    if files.exists(saved_path):
        saved = files.read_json(saved_path)
        if saved["dataset"] == dataset:
            return list(saved["responses"].values())
    path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No trained model at {path} and no {RESPONSES} beside it (git keeps only the runs' "
            "JSON): delete that run directory and run this again to retrain it."
        )
    model = keras.saving.load_model(path)
    responses = layer_responses(model, test())
    keras.backend.clear_session()
    files.write_json(saved_path, {"dataset": dataset, "responses": responses})
    return list(responses.values())


def measure(settings, runs):
    """{(kind, depth): [std per 3x3 layer, mean over seeds]} on the test set."""

    @functools.cache
    def test():  # read only if some run has not been measured yet
        data = data_lib.load_data(settings.dataset)
        return pipeline.make_pipeline(data.test, data.info, batch_size=128, training=False)

    return {
        key: np.mean(
            [run_responses(r["config"]["run_dir"], settings.dataset, test) for r in results],
            axis=0,
        )
        for key, results in runs.items()
    }


def table(measured):
    rows = []
    for (kind, depth), stds in measured.items():
        rows.append(
            (
                f"{'plain' if kind == 'plain' else 'ResNet'}-{depth}",
                len(stds),
                f"{np.mean(stds):.3f}",
                f"{np.median(stds):.3f}",
                f"{np.mean(stds[1:]):.3f}" if len(stds) > 1 else "-",
            )
        )
    return markdown.table(
        ["net", "3x3 layers", "mean std", "median std", "mean std, block layers only"],
        rows,
        align="lrrrr",
    )


def run(settings):
    from experiments import degradation

    # The nets of Fig. 6: the degradation runs (trained there, or here into degradation's folder).
    runs, trained = degradation.train_nets(settings)
    measured = measure(settings, runs)
    fig, axes = common.figure(1, 2, size=(8, 3.5))
    depths = sorted({depth for _, depth in measured})
    for (kind, depth), stds in measured.items():
        label = f"{'plain' if kind == 'plain' else 'ResNet'}-{depth}"
        color = f"C{depths.index(depth)}"
        style = dict(color=color, linestyle="-" if kind == "resnet" else "--", label=label)
        index = np.arange(1, len(stds) + 1)
        axes[0][0].plot(index, stds, **style)
        axes[1][0].plot(index, np.sort(stds)[::-1], **style)
    for ax, xlabel in zip(
        axes[:, 0], ("layer index (original)", "layer index (sorted by magnitude)"), strict=True
    ):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("std (log scale)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_title(f"std of 3x3 layer responses ({settings.dataset} test set)")
    plot = common.save_figure(fig, settings, EXPERIMENT)
    notes = (
        "Std per channel over test images and positions, averaged over channels; layer 1 is the "
        "stem conv (its BN output), then each block's two 3x3 layers (after BN, before the ReLU "
        "or the addition). The runs are the degradation experiment's."
    )
    report = common.write_report(
        settings,
        EXPERIMENT,
        table(measured),
        DEPTHS,
        [r for rs in runs.values() for r in rs],
        notes,
    )
    return {"table": report, "plot": plot, "responses": measured, "trained": trained}


def main(argv):
    del argv
    common.run_and_print(run, DEPTHS)


if __name__ == "__main__":
    app.run(main)
