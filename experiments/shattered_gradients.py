"""Shattered gradients (Balduzzi et al. 2017): at initialisation, input gradients of plain nets
decorrelate quickly with depth (like 1/2^L), those of ResNets slowly (like 1/sqrt(L)).

    python -m experiments.shattered_gradients          # committed: depths 8..110, 3 inits each
    python -m experiments.shattered_gradients --smoke  # seconds: 8x8 inputs, depths 8 and 20
    python -m experiments.shattered_gradients --depths=20,56 --seeds=5

No training. For plain-d and ResNet-d (the library's CIFAR nets, option A, 16x16x1 inputs) in
their initial state, take a line of 256 inputs x(t) = x0 + t u, t in [-2, 2] (x0 and u standard
normal images; the paper's 1-D input runs over [-2, 2] in 256 steps), and the gradient g(t) of one
logit (one output unit per line) with respect to the input at every point. The measure is the
neighbour correlation: the Pearson correlation of g(t_i) and g(t_i+1) over the input's pixels,
averaged over the 255 neighbouring pairs and 4 lines; then mean ± std over --seeds random inits.
1 means a smooth gradient field, 0 gradients like white noise ("shattered"). Also recorded: the
lag-1 autocorrelation of the directional derivative f'(t) = g(t).u, the function restricted to
the line, i.e. the paper's 1-D picture (its Fig. 1, plotted here for the shallowest and deepest
nets).

BN: inference mode, with every BN layer's moving statistics first set to the statistics a
training-mode pass computes on 256 reference inputs drawn like the line points (momentum 0 for that
pass; `calibrate_batch_norm`). At initialisation the moving statistics are mean 0 and variance 1,
so inference mode alone would make each BN an identity and measure nets without normalisation
(a ResNet's activations would double in variance per block). Training mode normalises, but couples
the 256 points through the batch statistics, so one point's gradient would depend on the others.
Population statistics normalise every layer as training-mode BN does at initialisation on this
input distribution, and keep each point's gradient its own.

Writes `results/shattered_gradients/<tag>.md` (table, command, hardware, wall time, verdict),
`<tag>.json` (every number behind them) and `<tag>.png` (left: correlation against depth, log
scale, beside 1/2^L and 1/sqrt(L) scaled to meet the shallowest nets; middle and right: f'(t)
along one line). Flags: experiments/common.py (--depths, --seeds, --smoke, --results_dir; the
training flags are refused).
"""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app

from experiments import common
from tfresnet import files, markdown, models

EXPERIMENT = "shattered_gradients"
DEPTHS = (8, 14, 20, 32, 44, 56, 110)
SMOKE_DEPTHS = (8, 20)
SEEDS = 3  # random inits per net unless --seeds says otherwise
KINDS = (("plain", "plain"), ("resnet", "ResNet"))


@dataclasses.dataclass(frozen=True)
class LineProbe:
    """How the gradients are sampled (saved in the JSON beside the results)."""

    input_shape: tuple = (16, 16, 1)  # small images: fast, and 256 pixels per gradient
    points: int = 256  # points on each line, as the paper's 256 inputs
    lines: int = 4  # lines per net; line i differentiates logit i mod 10
    span: float = 4.0  # t runs over [-span/2, span/2]: the paper's x in [-2, 2]
    reference_batch: int = 256  # inputs whose statistics the BN layers take

    @property
    def noise_floor(self):
        """Std of a mean neighbour correlation of independent gradients (white noise)."""
        return 1.0 / np.sqrt(np.prod(self.input_shape) * (self.points - 1) * self.lines)


PROBE = LineProbe()
SMOKE_PROBE = LineProbe(input_shape=(8, 8, 1), points=64, lines=2, reference_batch=64)


def line_points(rng, probe, lines):
    """`lines` lines x0 + t u as an array (lines, points, *input_shape), and their directions."""
    starts = rng.standard_normal((lines, *probe.input_shape))
    directions = rng.standard_normal((lines, *probe.input_shape))
    t = np.linspace(-probe.span / 2, probe.span / 2, probe.points)
    shape = (1, probe.points) + (1,) * len(probe.input_shape)
    points = starts[:, None] + t.reshape(shape) * directions[:, None]
    return points.astype("float32"), directions.astype("float32")


def reference_inputs(rng, probe):
    """`probe.reference_batch` inputs drawn like the line points: x0 + t u, t uniform."""
    shape = (probe.reference_batch, *probe.input_shape)
    t = rng.uniform(-probe.span / 2, probe.span / 2, size=(shape[0],) + (1,) * len(shape[1:]))
    return (rng.standard_normal(shape) + t * rng.standard_normal(shape)).astype("float32")


def calibrate_batch_norm(model, images):
    """Set every BN layer's moving statistics to those of a training-mode pass over `images`.

    Afterwards inference mode computes, on `images`, what training mode computed; momentum is
    restored. Only the BN moving statistics change.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0
        model(images, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return model


def input_gradients(logits, points, unit):
    """d logits[:, unit] / d input at each of `points` (inference mode), one row per point."""
    x = tf.convert_to_tensor(points)
    with tf.GradientTape() as tape:
        tape.watch(x)
        output = tf.reduce_sum(logits(x, training=False)[:, unit])
    return tape.gradient(output, x).numpy().reshape(len(points), -1).astype(np.float64)


def neighbour_correlation(gradients):
    """Mean Pearson correlation of consecutive rows of `gradients` (points, features)."""
    centred = gradients - gradients.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.where(norms > 0, norms, 1.0)
    return float(np.mean(np.sum(unit[1:] * unit[:-1], axis=1)))


def lag1_autocorrelation(series):
    """Lag-1 autocorrelation of a 1-D sequence: 1 for a smooth walk, about 0 for white noise."""
    centred = np.asarray(series, dtype=np.float64) - np.mean(series)
    denominator = np.sum(centred * centred)
    return float(np.sum(centred[1:] * centred[:-1]) / denominator) if denominator else 0.0


def measure_net(name, seed, probe):
    """One net at initialisation (seed `seed`): its neighbour correlation, lag-1
    autocorrelation and the directional derivative along its first line."""
    keras.utils.set_random_seed(seed)
    model = models.build_model(name, input_shape=probe.input_shape)
    rng = np.random.default_rng(seed)  # the same lines for every net of this seed
    calibrate_batch_norm(model, reference_inputs(rng, probe))
    logits = keras.Model(model.input, model.get_layer("logits").output)
    points, directions = line_points(rng, probe, probe.lines)
    correlations, autocorrelations, first = [], [], None
    for i in range(probe.lines):
        gradients = input_gradients(logits, points[i], i % logits.output_shape[-1])
        derivative = gradients @ directions[i].reshape(-1)
        correlations.append(neighbour_correlation(gradients))
        autocorrelations.append(lag1_autocorrelation(derivative))
        first = derivative if first is None else first
    keras.backend.clear_session()
    return {
        "neighbour_correlation": float(np.mean(correlations)),
        "lag1_autocorrelation": float(np.mean(autocorrelations)),
        "derivative": first.tolist(),
    }


def measure(settings, probe):
    """{(kind, depth): [measure_net per seed]} for every net of the experiment."""
    return {
        (kind, depth): [
            measure_net(f"{kind}{depth}", seed, probe) for seed in range(settings.seeds)
        ]
        for kind, _ in KINDS
        for depth in settings.depths
    }


def values(measured, kind, depth, key="neighbour_correlation"):
    return [m[key] for m in measured[kind, depth]]


def references(depths, shallow_value, kind):
    """The paper's rates through (min depth, shallow_value): 1/2^L over the L = d - 1 ReLU layers
    of plain-d, 1/sqrt(L) over the L = (d - 2) / 2 residual blocks of ResNet-d."""
    depths = np.asarray(depths, dtype=float)
    if kind == "plain":
        return shallow_value * 2.0 ** -(depths - depths[0])
    return shallow_value * np.sqrt((depths[0] - 2) / (depths - 2))


def fitted_rates(measured, depths, floor):
    """Plain: the per-layer factor r of corr ~ r^L (depths above 3x the noise floor); ResNet: the
    exponent a of corr ~ L^-a (L = residual blocks). None where fewer than two depths qualify."""
    rates = {}
    for kind, _ in KINDS:
        means = np.array([np.mean(values(measured, kind, d)) for d in depths])
        keep = means > 3 * floor
        if keep.sum() < 2:
            rates[kind] = None
            continue
        x = np.asarray(depths, float)[keep]
        if kind == "plain":
            rates[kind] = float(2.0 ** np.polyfit(x, np.log2(means[keep]), 1)[0])
        else:
            rates[kind] = float(-np.polyfit(np.log((x - 2) / 2), np.log(means[keep]), 1)[0])
    return rates


def verdict(measured, depths, floor):
    """Whether plain nets lose their gradient correlation much faster than ResNets (computed)."""
    if len(depths) < 2:
        return ""
    shallow, deep = min(depths), max(depths)
    lost = {}
    parts = []
    for kind, title in KINDS:
        first, last = (np.mean(values(measured, kind, d)) for d in (shallow, deep))
        lost[kind] = 1.0 - last / first if first > 0 else 0.0
        parts.append(f"{title} {first:.3f} -> {last:.3f} ({100 * lost[kind]:.0f}% of it lost)")
    much = lost["plain"] >= 2 * max(lost["resnet"], 0.01) and lost["plain"] > 0.5
    shattered = [d for d in depths if np.mean(values(measured, "plain", d)) < 3 * floor]
    line = (
        f"Neighbour correlation from depth {shallow} to {deep}: {'; '.join(parts)}. "
        f"Verdict: plain nets decorrelate {'much faster than' if much else 'not much faster than'}"
        " ResNets"
    )
    if shattered:
        line += (
            f"; from depth {min(shattered)} the plain nets' gradients are white noise (below 3x "
            f"the noise floor {floor:.4f})"
        )
    return line + "."


def table(measured, depths):
    rows = []
    for depth in depths:
        row = [depth, f"{depth - 1} / {(depth - 2) // 2}"]
        for key in ("neighbour_correlation", "lag1_autocorrelation"):
            for kind, _ in KINDS:
                row.append(common.mean_std(values(measured, kind, depth, key), 1.0, 3))
        rows.append(row)
    return markdown.table(
        [
            "depth",
            "ReLU layers / residual blocks",
            "plain: neighbour correlation",
            "ResNet: neighbour correlation",
            "plain: lag-1 autocorr. of f'(t)",
            "ResNet: lag-1 autocorr. of f'(t)",
        ],
        rows,
        align="rrrrrr",
    )


def tag(settings, probe):
    return f"{'smoke' if settings.smoke else 'x'.join(map(str, probe.input_shape[:2]))}-" + (
        f"{settings.seeds}seed"
    )


def plot(settings, probe, measured, name):
    depths = list(settings.depths)
    floor = probe.noise_floor
    fig, axes = common.figure(3, size=(5, 4))
    ax = axes[0][0]
    for i, (kind, title) in enumerate(KINDS):
        per_seed = np.array([values(measured, kind, d) for d in depths])
        means = per_seed.mean(axis=1)
        std = per_seed.std(axis=1, ddof=1) if per_seed.shape[1] > 1 else np.zeros(len(depths))
        shown = np.maximum(means, floor)
        ax.errorbar(depths, shown, yerr=std, color=f"C{i}", marker="o", label=f"{title}, measured")
        below = means <= floor
        ax.plot(np.array(depths)[below], shown[below], "v", color=f"C{i}", markersize=9)
        reference = references(depths, means[0], kind)
        label = (
            f"1/2^L, L = ReLU layers, through {title}-{depths[0]}"
            if kind == "plain"
            else f"1/√L, L = residual blocks, through {title}-{depths[0]}"
        )
        ax.plot(depths, np.maximum(reference, floor / 10), "--", color=f"C{i}", label=label)
    ax.axhline(
        floor, color="gray", linewidth=0.8, linestyle=":", label="noise floor (▼: at or below)"
    )
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1.5)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("neighbour gradient correlation")
    ax.set_title(f"at initialisation, {'x'.join(map(str, probe.input_shape))} inputs")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    t = np.linspace(-probe.span / 2, probe.span / 2, probe.points)
    for ax, (kind, title) in zip(axes[0][1:], KINDS, strict=True):
        for offset, depth, color in ((0, min(depths), "C2"), (-5, max(depths), "C3")):
            trace = np.asarray(measured[kind, depth][0]["derivative"])
            trace = (trace - trace.mean()) / (trace.std() or 1.0)
            ax.plot(t, trace + offset, color=color, linewidth=0.8, label=f"{title}-{depth}")
        ax.set_title(f"{title}: f'(t) along one line (seed 0)")
        ax.set_xlabel("t")
        ax.set_ylabel("gradient, standardised (deepest shifted down)")
        ax.legend(fontsize=8)
    return common.save_figure(fig, settings, EXPERIMENT, name)


def run(settings, probe=None):
    """Measure every net; write the table, the JSON and the plot. Returns paths and numbers."""
    probe = probe or (SMOKE_PROBE if settings.smoke else PROBE)
    start = time.perf_counter()
    measured = measure(settings, probe)
    wall = time.perf_counter() - start
    depths = list(settings.depths)
    name = tag(settings, probe)
    folder = os.path.join(settings.results_dir, EXPERIMENT)
    command = common.command(EXPERIMENT, settings, DEPTHS)
    floor = probe.noise_floor
    rates = fitted_rates(measured, depths, floor)
    line = verdict(measured, depths, floor)
    numbers = {
        "experiment": EXPERIMENT,
        "command": command,
        "hardware": common.hardware(),
        "wall_time_s": round(wall, 1),
        "seeds": settings.seeds,
        "depths": depths,
        "probe": dataclasses.asdict(probe),
        "noise_floor": floor,
        "batch_norm": "inference mode, moving statistics of a training-mode pass over the "
        "reference inputs",
        "fitted": {"plain_per_layer_factor": rates["plain"], "resnet_exponent": rates["resnet"]},
        "verdict": line,
        "nets": {
            f"{kind}{depth}": {
                key: values(measured, kind, depth, key)
                for key in ("neighbour_correlation", "lag1_autocorrelation")
            }
            for (kind, depth) in measured
        },
    }
    json_path = os.path.join(folder, f"{name}.json")
    files.write_json(json_path, numbers)  # temp file, then rename
    png = plot(settings, probe, measured, name)
    plain, resnet = (
        "- (too few depths)" if rate is None else f"{rate:.3f}"
        for rate in (rates["plain"], rates["resnet"])
    )
    fits = (
        f"Fitted decay: plain, corr ~ r^L with r = {plain} per layer (1/2^L: r = 0.5); ResNet, "
        f"corr ~ L^-a with a = {resnet} (1/sqrt(L): a = 0.5)."
    )
    text = (
        f"Nets at initialisation (no training); {probe.input_shape[0]}x{probe.input_shape[1]}x"
        f"{probe.input_shape[2]} inputs; {probe.lines} lines of {probe.points} points "
        f"x0 + t u, t in [{-probe.span / 2:g}, {probe.span / 2:g}], per net; BN in inference mode "
        f"with the statistics of {probe.reference_batch} reference inputs; {settings.seeds} random "
        f"inits per net (mean ± std). Hardware: {common.hardware()}. Wall time: {wall / 60:.1f} "
        f"min.\n\nCommand: `{command}`\n\n{table(measured, depths)}\n\n"
        f"Neighbour correlation: Pearson correlation of the input gradients of one logit at "
        f"neighbouring points of a line; noise floor (white-noise gradients) {floor:.4f}. "
        f"Numbers: [{name}.json]({name}.json).\n\n{fits}\n\n{line}\n"
    )
    md_path = os.path.join(folder, f"{name}.md")
    files.write_text(md_path, text)
    return {"table": md_path, "plot": png, "json": json_path, "measured": measured}


def main(argv):
    del argv
    common.run_and_print(run, DEPTHS, smoke_depths=SMOKE_DEPTHS, default_seeds=SEEDS, trains=False)


if __name__ == "__main__":
    app.run(main)
