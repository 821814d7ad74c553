"""Shattered gradients (Balduzzi et al. 2017): at initialisation, input gradients of plain nets
decorrelate quickly with depth, those of ResNets slowly.

    python -m experiments.shattered_gradients          # committed: depths 8..110, 3 inits each
    python -m experiments.shattered_gradients --smoke  # seconds: 8x8 inputs, depths 8 and 20
    python -m experiments.shattered_gradients --depths=20,56 --seeds=5

No training. For plain-d and ResNet-d (the library's CIFAR nets, option A, 16x16x1 inputs) in
their initial state, take a line of 256 inputs x(t) = x0 + t u, t in [-2, 2] (x0 and u standard
normal images; the paper's 1-D input runs over [-2, 2] in 256 steps), and the gradient g(t) of one
logit (one output unit per line) with respect to the input at every point. Two measures, Pearson
correlations over the input's pixels averaged over the pairs and 4 lines, then mean ± std over
--seeds random inits: the neighbour correlation, of g(t_i) and g(t_i+1) (1: a smooth gradient
field, 0: white noise, "shattered"), and the distinct-input correlation, of points half a line
apart: the setting of the paper's theorems (inputs whose ReLU patterns are independent), where
its rates 1/2^L (plain) and 1/sqrt(L) (ResNet) are predictions, so only there are they drawn.
Each mean's noise floor is its block-bootstrap standard error (`block_bootstrap_se`: overlapping
pairs are not independent). Also recorded: the lag-1 autocorrelation of the directional
derivative f'(t) = g(t).u, the function restricted to the line (the paper's Fig. 1, plotted for
the shallowest and deepest nets). Beside the conv nets, the paper's own setting: fully connected
nets on a scalar input (`fc_gradients`, `measure_fc`; a minute or two of CPU).

BN: inference mode, with every BN layer's moving statistics first set to the statistics a
training-mode pass computes on 256 reference inputs drawn like the line points (momentum 0 for that
pass; `calibrate_batch_norm`). At initialisation the moving statistics are mean 0 and variance 1,
so inference mode alone would make each BN an identity and measure nets without normalisation
(a ResNet's activations would double in variance per block). Training mode normalises, but couples
the 256 points through the batch statistics, so one point's gradient would depend on the others.
Population statistics normalise every layer as training-mode BN does at initialisation on this
input distribution, and keep each point's gradient its own.

Writes `results/shattered_gradients/<tag>.md` (tables, command, hardware, wall time, verdict),
`<tag>.json` (every number behind them) and `<tag>.png` (top: the conv nets' two correlations
against depth and f'(t) along one line; bottom: the same for the fully connected nets). Flags:
experiments/common.py (--depths, --seeds, --smoke, --results_dir; the training flags are
refused).
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
    block: int = 16  # pairs per block of the block bootstrap (neighbouring pairs share a point)
    resamples: int = 1000  # bootstrap resamples


PROBE = LineProbe()
SMOKE_PROBE = LineProbe(
    input_shape=(8, 8, 1), points=64, lines=2, reference_batch=64, block=8, resamples=200
)


@dataclasses.dataclass(frozen=True)
class FullyConnected1D:
    """Balduzzi et al.'s own setting (their Fig. 1-2): fully connected ReLU nets (`fc_gradients`),
    one scalar input on a grid of points in [-2, 2], `width` units per layer, `inits` random
    inits per net (the distinct-input correlation is an average over inits, as in their
    theorems)."""

    width: int = 200
    points: int = 256
    span: float = 4.0
    inits: int = 16
    depths: tuple = (1, 2, 4, 8, 16, 32, 50)


FC = FullyConnected1D()
SMOKE_FC = FullyConnected1D(width=16, points=64, inits=4, depths=(1, 4))


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


def pair_correlations(gradients, lag=1):
    """Pearson correlation of rows i and i + lag of `gradients` (points, features), for each i."""
    centred = gradients - gradients.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.where(norms > 0, norms, 1.0)
    return np.sum(unit[lag:] * unit[:-lag], axis=1)


def neighbour_correlation(gradients):
    """Mean Pearson correlation of consecutive rows of `gradients` (points, features)."""
    return float(np.mean(pair_correlations(gradients)))


def block_bootstrap_se(series, block, resamples, rng):
    """Standard error of the mean over `series` (one 1-D array per line, lines independent).

    Within a line neighbouring values are dependent (consecutive pairs share a point, and a
    smooth gradient field correlates over many points), so each resample joins blocks of
    `block` consecutive values drawn with replacement (a moving-block bootstrap) rather than
    single values.
    """
    replicates = np.zeros(resamples)
    for values in series:
        n = len(values)
        size = min(block, n)
        starts = rng.integers(0, n - size + 1, size=(resamples, -(-n // size)))
        index = (starts[..., None] + np.arange(size)).reshape(resamples, -1)[:, :n]
        replicates += values[index].mean(axis=1)
    return float((replicates / len(series)).std(ddof=1))


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
    neighbours, distinct, autocorrelations, first = [], [], [], None
    for i in range(probe.lines):
        gradients = input_gradients(logits, points[i], i % logits.output_shape[-1])
        derivative = gradients @ directions[i].reshape(-1)
        neighbours.append(pair_correlations(gradients))
        distinct.append(pair_correlations(gradients, lag=probe.points // 2))
        autocorrelations.append(lag1_autocorrelation(derivative))
        first = derivative if first is None else first
    keras.backend.clear_session()
    return {
        "neighbour_correlation": float(np.mean(neighbours)),
        "neighbour_se": block_bootstrap_se(neighbours, probe.block, probe.resamples, rng),
        "distinct_correlation": float(np.mean(distinct)),
        "distinct_se": block_bootstrap_se(distinct, probe.block, probe.resamples, rng),
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


def floors(measured, depths, key="neighbour"):
    """{kind: [noise floor per depth]}: the block-bootstrap standard error of the mean over
    seeds of `key`_correlation (seeds independent: the root of the summed variances / seeds)."""
    return {
        kind: [
            float(np.sqrt(np.sum(np.square(values(measured, kind, d, f"{key}_se")))))
            / len(measured[kind, d])
            for d in depths
        ]
        for kind, _ in KINDS
    }


def references(depths, shallow_value, kind):
    """The paper's rates through (min depth, shallow_value): 1/2^L over the L = d - 1 ReLU layers
    of plain-d, 1/sqrt(L) over the L = (d - 2) / 2 residual blocks of ResNet-d."""
    depths = np.asarray(depths, dtype=float)
    if kind == "plain":
        return shallow_value * 2.0 ** -(depths - depths[0])
    return shallow_value * np.sqrt((depths[0] - 2) / (depths - 2))


def fitted_rates(measured, depths, floor):
    """Plain: the per-layer factor r of corr ~ r^L (depths above 3x their noise floor); ResNet:
    the exponent a of corr ~ L^-a (L = residual blocks). None where fewer than two depths
    qualify."""
    rates = {}
    for kind, _ in KINDS:
        means = np.array([np.mean(values(measured, kind, d)) for d in depths])
        keep = means > 3 * np.asarray(floor[kind])
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
    shattered = [
        (d, f)
        for d, f in zip(depths, floor["plain"], strict=True)
        if abs(np.mean(values(measured, "plain", d))) < 3 * f
    ]
    line = (
        f"Neighbour correlation from depth {shallow} to {deep}: {'; '.join(parts)}. "
        f"Verdict: plain nets decorrelate {'much faster than' if much else 'not much faster than'}"
        " ResNets"
    )
    if shattered:
        line += (
            f"; from depth {shattered[0][0]} the plain nets' gradients are white noise (within 3x "
            f"the noise floor, {shattered[0][1]:.4f} there)"
        )
    return line + "."


def table(measured, depths):
    rows = []
    for depth in depths:
        row = [depth, f"{depth - 1} / {(depth - 2) // 2}"]
        for key in ("neighbour_correlation", "distinct_correlation", "lag1_autocorrelation"):
            for kind, _ in KINDS:
                row.append(common.mean_std(values(measured, kind, depth, key), 1.0, 3))
        rows.append(row)
    return markdown.table(
        [
            "depth",
            "ReLU layers / residual blocks",
            "plain: neighbour correlation",
            "ResNet: neighbour correlation",
            "plain: distinct-input correlation",
            "ResNet: distinct-input correlation",
            "plain: lag-1 autocorr. of f'(t)",
            "ResNet: lag-1 autocorr. of f'(t)",
        ],
        rows,
        align="r" * 8,
    )


def fc_gradients(kind, depth, fc, rng):
    """(f, df/dx) at the `fc.points` grid points of one fully connected net at initialisation.

    Both start with one ReLU layer on the scalar input, relu(x w + b) with N(0, 1) biases (in
    one dimension they put the kinks inside the input range; a BN there would remove them).
    plain: then `depth` - 1 layers relu(BN(h W)); ResNet: then `depth` pre-activation blocks
    z <- z + relu(BN(z)) W and a last relu(BN(z)). Both end in a dense readout. He-normal
    weights; BN in inference mode with the statistics of the grid itself, so each point's
    gradient is its own. The derivative is carried forward with the values (one input: forward
    mode costs one more matrix product a layer).
    """
    x = np.linspace(-fc.span / 2, fc.span / 2, fc.points)

    def dense(h, dh, fan_out):
        w = rng.standard_normal((h.shape[1], fan_out)) * np.sqrt(2.0 / h.shape[1])
        return h @ w, dh @ w

    def bn_relu(z, dz):
        std = z.std(axis=0) + 1e-5
        z, dz = (z - z.mean(axis=0)) / std, dz / std
        return np.maximum(z, 0), dz * (z > 0)

    w, b = rng.standard_normal(fc.width) * np.sqrt(2.0), rng.standard_normal(fc.width)
    z = x[:, None] * w + b
    h, dh = np.maximum(z, 0), (z > 0) * w
    for _ in range(depth if kind == "resnet" else depth - 1):
        if kind == "resnet":
            branch, dbranch = dense(*bn_relu(h, dh), fc.width)
            h, dh = h + branch, dh + dbranch
        else:
            h, dh = bn_relu(*dense(h, dh, fc.width))
    if kind == "resnet":
        h, dh = bn_relu(h, dh)
    out, dout = dense(h, dh, 1)
    return out[:, 0], dout[:, 0]


def measure_fc(fc, seed=0):
    """{(kind, depth): {"lag1": [per init], "distinct": mean, "distinct_se": bootstrap SE over
    inits, "gradient": the first init's df/dx}} for Balduzzi et al.'s 1-D setting.

    "distinct": the correlation over inits of df/dx at points half the grid apart, uncentred
    (E[g_i g_j] / sqrt(E[g_i^2] E[g_j^2]), the quantity of their theorems), averaged over the
    pairs."""
    rng = np.random.default_rng(seed)
    out = {}
    lag = fc.points // 2
    for kind, _ in KINDS:
        for depth in fc.depths:
            g = np.array([fc_gradients(kind, depth, fc, rng)[1] for _ in range(fc.inits)])

            def distinct(rows):
                a, b = rows[:, :-lag], rows[:, lag:]
                return float(
                    np.mean(np.sum(a * b, 0) / np.sqrt(np.sum(a * a, 0) * np.sum(b * b, 0)))
                )

            resampled = [distinct(g[rng.integers(0, len(g), len(g))]) for _ in range(200)]
            out[kind, depth] = {
                "lag1": [lag1_autocorrelation(row) for row in g],
                "distinct": distinct(g),
                "distinct_se": float(np.std(resampled, ddof=1)),
                "gradient": g[0].tolist(),
            }
    return out


def fc_table(fc_measured, fc):
    rows = []
    for depth in fc.depths:
        row = [depth]
        for kind, _ in KINDS:
            m = fc_measured[kind, depth]
            row.append(common.mean_std(m["lag1"], 1.0, 3))
        for kind, _ in KINDS:
            m = fc_measured[kind, depth]
            row.append(f"{m['distinct']:.3f} ± {m['distinct_se']:.3f}")
        rows.append(row)
    return markdown.table(
        [
            "ReLU layers (plain) / blocks (ResNet)",
            "plain: lag-1 autocorr. of df/dx",
            "ResNet: lag-1 autocorr. of df/dx",
            "plain: distinct-input correlation",
            "ResNet: distinct-input correlation",
        ],
        rows,
        align="r" * 5,
    )


def tag(settings, probe):
    return f"{'smoke' if settings.smoke else 'x'.join(map(str, probe.input_shape[:2]))}-" + (
        f"{settings.seeds}seed"
    )


def _against_depth(ax, x, per_kind, floor, ylabel, title, refs=None):
    """One panel: a measure per kind against depth (log scale), the noise floors, and (where
    they are predictions) the paper's rates through the shallowest value."""
    positive = [m for means, _ in per_kind.values() for m in means if m > 0]
    low = max(min([*positive, *(min(f) for f in floor.values())]) / 3, 1e-4)
    for i, (kind, name) in enumerate(KINDS):
        means, std = per_kind[kind]
        shown = np.maximum(means, low)
        ax.errorbar(x[kind], shown, yerr=std, color=f"C{i}", marker="o", label=f"{name}, measured")
        below = np.abs(means) < 3 * np.asarray(floor[kind])
        ax.plot(np.asarray(x[kind])[below], shown[below], "v", color=f"C{i}", markersize=9)
        ax.plot(x[kind], 3 * np.asarray(floor[kind]), ":", color=f"C{i}", linewidth=0.8)
        if refs and means[0] > 3 * floor[kind][0]:  # a shallow value to draw the rate through
            reference = refs(x[kind], means[0], kind)
            label = "1/2^L, L = ReLU layers" if kind == "plain" else "1/√L, L = residual blocks"
            ax.plot(x[kind], np.maximum(reference, low / 2), "--", color=f"C{i}", label=label)
    ax.set_yscale("log")
    ax.set_ylim(low / 1.5, 1.5)
    ax.set_xlabel("depth")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, title="dotted: 3x noise floor; ▼ within it", title_fontsize=7)


def _shallowest_and_deepest(ax, x, traces, title, xlabel):
    """The first and last of `traces` ({label: gradient along x}, shallow to deep),
    standardised, the deepest shifted down: brown noise against white noise."""
    labels = list(traces)
    for offset, label, color in ((0, labels[0], "C2"), (-5, labels[-1], "C3")):
        trace = np.asarray(traces[label])
        trace = (trace - trace.mean()) / (trace.std() or 1.0)
        ax.plot(x, trace + offset, color=color, linewidth=0.8, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gradient, standardised (deepest shifted down)")
    ax.legend(fontsize=8)


def plot(settings, probe, measured, name, fc_measured, fc):
    depths = list(settings.depths)
    fig, axes = common.figure(4, 2, size=(4.6, 4.0))

    def stats(key, kind):
        per_seed = np.array([values(measured, kind, d, key) for d in depths])
        std = per_seed.std(axis=1, ddof=1) if per_seed.shape[1] > 1 else 0 * per_seed[:, 0]
        return per_seed.mean(axis=1), std

    x = {kind: depths for kind, _ in KINDS}
    shape = "x".join(map(str, probe.input_shape))
    for ax, key, refs, what in (
        (axes[0][0], "neighbour", None, "neighbouring points"),
        (axes[0][1], "distinct", references, f"points {probe.points // 2} apart (distinct)"),
    ):
        _against_depth(
            ax,
            x,
            {kind: stats(f"{key}_correlation", kind) for kind, _ in KINDS},
            floors(measured, depths, key),
            "gradient correlation",
            f"conv nets, {shape} inputs: {what}",
            refs,
        )
    t = np.linspace(-probe.span / 2, probe.span / 2, probe.points)
    for ax, (kind, title) in zip(axes[0][2:], KINDS, strict=True):
        traces = {f"{title}-{d}": measured[kind, d][0]["derivative"] for d in sorted(depths)}
        _shallowest_and_deepest(ax, t, traces, f"{title}: f'(t) along one line (seed 0)", "t")
    fx = {kind: list(fc.depths) for kind, _ in KINDS}
    lag1 = {
        kind: (
            np.array([np.mean(fc_measured[kind, d]["lag1"]) for d in fc.depths]),
            np.array([np.std(fc_measured[kind, d]["lag1"], ddof=1) for d in fc.depths]),
        )
        for kind, _ in KINDS
    }
    lag1_floor = {
        kind: [np.std(fc_measured[kind, d]["lag1"], ddof=1) / np.sqrt(fc.inits) for d in fc.depths]
        for kind, _ in KINDS
    }
    distinct = {
        kind: (
            np.array([fc_measured[kind, d]["distinct"] for d in fc.depths]),
            np.array([fc_measured[kind, d]["distinct_se"] for d in fc.depths]),
        )
        for kind, _ in KINDS
    }
    distinct_floor = {k: list(v[1]) for k, v in distinct.items()}
    _against_depth(
        axes[1][0], fx, lag1, lag1_floor, "lag-1 autocorrelation of df/dx",
        f"fully connected, 1-D input: neighbouring points ({fc.inits} inits)",
    )  # fmt: skip
    _against_depth(
        axes[1][1], fx, distinct, distinct_floor, "correlation over inits",
        "fully connected, 1-D input: points 2 apart (distinct)",
        lambda d, v, kind: v * (2.0 ** -(np.asarray(d, float) - d[0]) if kind == "plain"
                                else np.sqrt(d[0] / np.asarray(d, float))),
    )  # fmt: skip
    grid = np.linspace(-fc.span / 2, fc.span / 2, fc.points)
    for ax, (kind, title) in zip(axes[1][2:], KINDS, strict=True):
        traces = {f"{title}, {d}": fc_measured[kind, d]["gradient"] for d in sorted(fc.depths)}
        title = f"fully connected {title}: df/dx (Balduzzi's Fig. 1)"
        _shallowest_and_deepest(ax, grid, traces, title, "x")
    fig.tight_layout()
    return common.save_figure(fig, settings, EXPERIMENT, name)


def run(settings, probe=None, fc=None):
    """Measure every net; write the table, the JSON and the plot. Returns paths and numbers."""
    probe = probe or (SMOKE_PROBE if settings.smoke else PROBE)
    fc = fc or (SMOKE_FC if settings.smoke else FC)
    start = time.perf_counter()
    measured = measure(settings, probe)
    conv_wall = time.perf_counter() - start
    fc_measured = measure_fc(fc)
    wall = time.perf_counter() - start
    depths = list(settings.depths)
    name = tag(settings, probe)
    folder = os.path.join(settings.results_dir, EXPERIMENT)
    command = common.command(EXPERIMENT, settings, DEPTHS)
    floor = floors(measured, depths)
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
        "noise_floor": {
            "what": "block-bootstrap standard error of the mean over seeds",
            "neighbour": floor,
            "distinct": floors(measured, depths, "distinct"),
        },
        "batch_norm": "inference mode, moving statistics of a training-mode pass over the "
        "reference inputs",
        "fitted": {"plain_per_layer_factor": rates["plain"], "resnet_exponent": rates["resnet"]},
        "verdict": line,
        "nets": {
            f"{kind}{depth}": {
                key: values(measured, kind, depth, key)
                for key in (
                    "neighbour_correlation",
                    "neighbour_se",
                    "distinct_correlation",
                    "distinct_se",
                    "lag1_autocorrelation",
                )
            }
            for (kind, depth) in measured
        },
        "fully_connected_1d": {
            "setting": dataclasses.asdict(fc),
            "nets": {
                f"{kind}{depth}": {k: v for k, v in m.items() if k != "gradient"}
                for (kind, depth), m in fc_measured.items()
            },
        },
    }
    json_path = os.path.join(folder, f"{name}.json")
    files.write_json(json_path, numbers)  # temp file, then rename
    png = plot(settings, probe, measured, name, fc_measured, fc)
    plain, resnet = (
        "- (too few depths)" if rate is None else f"{rate:.3f}"
        for rate in (rates["plain"], rates["resnet"])
    )
    fits = (
        f"Fitted decay of the neighbour correlation: plain, corr ~ r^L with r = {plain} per layer "
        f"(1/2^L: r = 0.5); ResNet, corr ~ L^-a with a = {resnet} (1/sqrt(L): a = 0.5). Neither "
        "rate is a prediction for neighbours: Balduzzi et al. derive both for inputs whose ReLU "
        "patterns are independent, i.e. distinct inputs, not neighbouring points of a line."
    )
    text = (
        f"Nets at initialisation (no training); {probe.input_shape[0]}x{probe.input_shape[1]}x"
        f"{probe.input_shape[2]} inputs; {probe.lines} lines of {probe.points} points "
        f"x0 + t u, t in [{-probe.span / 2:g}, {probe.span / 2:g}], per net; BN in inference mode "
        f"with the statistics of {probe.reference_batch} reference inputs; {settings.seeds} random "
        f"inits per net (mean ± std). Hardware: {common.hardware()}. Wall time: {wall / 60:.1f} "
        f"min ({conv_wall / 60:.1f} for the conv nets).\n\nCommand: `{command}`\n\n"
        f"{table(measured, depths)}\n\n"
        f"Neighbour correlation: Pearson correlation of the input gradients of one logit at "
        f"neighbouring points of a line; distinct-input correlation: the same at points "
        f"{probe.points // 2} apart (t {probe.span / 2:g} apart). Noise floor: the "
        f"block-bootstrap standard error of the mean (blocks of {probe.block} pairs, "
        f"{probe.resamples} resamples: neighbouring pairs share a point and are not "
        f"independent); a mean within 3x it is indistinguishable from 0. Numbers: "
        f"[{name}.json]({name}.json).\n\n{fits}\n\n{line}\n\n"
        f"Balduzzi et al.'s own setting: fully connected ReLU nets, {fc.width} units a layer, "
        f"one scalar input x on {fc.points} points in [{-fc.span / 2:g}, {fc.span / 2:g}], "
        f"{fc.inits} random inits each; a first layer relu(x w + b), then plain: layers "
        "relu(BN(h W)), ResNet: pre-activation blocks z + relu(BN(z)) W; He-normal weights, "
        "BN with the grid's statistics (`fc_gradients`). Lag-1 autocorrelation of df/dx over "
        f"the grid (mean ± std over inits); distinct-input correlation: E[g(x) g(x + 2)] / "
        f"sqrt(E[g(x)^2] E[g(x + 2)^2]) over the inits, averaged over x (± its bootstrap "
        f"standard error over inits).\n\n{fc_table(fc_measured, fc)}\n"
    )
    md_path = os.path.join(folder, f"{name}.md")
    files.write_text(md_path, text)
    return {
        "table": md_path,
        "plot": png,
        "json": json_path,
        "measured": measured,
        "fully_connected": fc_measured,
    }


def main(argv):
    del argv
    common.run_and_print(run, DEPTHS, smoke_depths=SMOKE_DEPTHS, default_seeds=SEEDS, trains=False)


if __name__ == "__main__":
    app.run(main)
