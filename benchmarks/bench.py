"""Training and inference throughput, FLOP rate and memory of the ResNets on this machine.

From the root of a clone (once `tfresnet bench`):

    python -m benchmarks.bench                   # the table of docs/performance.md
    python -m benchmarks.bench --models=resnet20 --precisions=mixed_bfloat16 --steps=50
    python -m benchmarks.bench --bn=keras        # the same with Keras' own BatchNormalization
    python -m benchmarks.bench --quick           # a smoke run in seconds (what the tests run)
    python -m benchmarks.bench --output=bench.jsonl   # the JSON lines to a file too

    records = run(BenchConfig(models=("resnet20",), precisions=("float32",)))  # in Python

Every (model, precision) runs in a fresh process, so its peak RSS is its own and no state leaks
between cases; the matmul peak and the input pipeline are timed in the calling process.
Training is `model.fit` on one synthetic in-memory batch repeated (SGD momentum 0.9, weight
decay 1e-4, as the PyTorch peer benchmark); the first executions (tracing, graph optimisation)
are excluded, each timed epoch gives one rate, and the median is reported. Inference is the
compiled forward pass, of the BN-folded model tfresnet serves and of the model as trained.
Achieved GFLOP/s counts 2 FLOPs per multiply-add (`models.count_flops`) and, for training, 3x
the forward pass (the backward pass computes gradients for inputs and for weights, each about
one forward pass). `peak_fraction` divides it by a large `tf.matmul` timed in the same run and
precision. `keras_resnet50` is `keras.applications.ResNet50(weights=None)`, the in-framework
baseline. Output: JSON lines, then a markdown table. The comparison with PyTorch, each model
paired with the peer run right after it, is `benchmarks/paired_step_rate.py`.
"""

import contextlib
import dataclasses
import json
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import flags

import benchmarks
from tfresnet import data as data_lib
from tfresnet import files, inference, layers, markdown, models, pipeline, specs
from tfresnet.cli import native_logs
from tfresnet.precision import PRECISIONS as POLICIES
from tfresnet.timing import EpochTimer

PRECISIONS = tuple(p for p in POLICIES if p != "auto")  # the bench times named policies only
DEFAULT_MODELS = ("resnet20", "resnet56", "resnet50", "keras_resnet50")
DEFAULT_PRECISIONS = ("float32", "mixed_bfloat16")
BN_KINDS = ("fused", "keras")
KERAS_BASELINE = "keras_resnet50"
WEIGHT_DECAY = 1e-4


@dataclasses.dataclass(frozen=True)
class Case:
    """How one network is measured: its input, batch and default timed steps per epoch."""

    image_size: int
    batch_size: int
    steps: int


CASES = {
    "resnet20": Case(32, 128, 40),
    "resnet56": Case(32, 128, 16),
    "resnet50": Case(224, 32, 6),
    KERAS_BASELINE: Case(224, 32, 6),
}
QUICK_CASE = Case(16, 8, 2)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark run; flags fill it (the loop settings are echoed in each model's line)."""

    models: tuple = DEFAULT_MODELS  # tfresnet names (any build_model name) or keras_resnet50
    precisions: tuple = DEFAULT_PRECISIONS  # Keras dtype policies
    steps: int = 0  # timed training/inference steps per epoch; 0: per-model default (CASES)
    repeats: int = 3  # timed epochs (and predict calls); the median rate is reported
    image_size: int = 0  # 0: per-model default (32 CIFAR, 224 ImageNet)
    batch_size: int = 0  # 0: per-model default (128 CIFAR, 32 ImageNet)
    steps_per_execution: int = 8  # train steps per tf.function call (Keras' default is 1)
    jit_compile: bool = False  # XLA; slower than oneDNN's kernels on CPU
    bn: str = "fused"  # "fused": tfresnet's BN on TF's fused kernel; "keras": Keras' own BN
    matmul_size: int = 4096  # n of the n x n x n matmul that measures the peak
    pipeline: bool = True  # also time the CIFAR augmentation input pipeline
    quick: bool = False  # smoke mode: 16x16 inputs, batch 8, 2 steps, tiny matmul and pipeline

    def __post_init__(self):
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ValueError(f"Unknown precision {bad[0]!r}; allowed: {', '.join(PRECISIONS)}.")
        if self.bn not in BN_KINDS:
            raise ValueError(f"Unknown bn {self.bn!r}; allowed: {', '.join(BN_KINDS)}.")
        for name in ("steps", "image_size", "batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}.")
        for name in ("repeats", "steps_per_execution", "matmul_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if not self.models or not self.precisions:
            raise ValueError("Give at least one model and one precision to measure.")
        for name in self.models:
            if name != KERAS_BASELINE:  # refused now, not after the host and matmul benchmarks
                size = case_for(name, self).image_size
                specs.check_input_shape((size, size, 3), specs.resolve_spec(name), name)


def case_for(name, config):
    """The measured input size, batch and steps of `name` under `config`'s overrides."""
    if config.quick:
        base = QUICK_CASE
    elif name in CASES:
        base = CASES[name]
    else:
        cifar = specs.resolve_spec(name).family == "cifar"
        base = Case(32, 128, 16) if cifar else Case(224, 32, 6)
    return Case(
        config.image_size or base.image_size,
        config.batch_size or base.batch_size,
        config.steps or base.steps,
    )


# --- the measured things --------------------------------------------------------------------


def build(name, image_size, bn="fused"):
    """A tfresnet model (or the keras.applications baseline) at `image_size`."""
    shape = (image_size, image_size, 3)
    if name == KERAS_BASELINE:
        return keras.applications.ResNet50(weights=None, input_shape=shape)
    model = models.build_model(name, input_shape=shape, weight_decay=WEIGHT_DECAY)
    return layers.with_keras_batch_norm(model) if bn == "keras" else model


def synthetic_batches(model, batch_size):
    """One random batch repeated forever: no input cost, so the model alone is timed."""
    _, height, width, channels = model.input_shape
    classes = model.output_shape[-1]
    images = tf.random.uniform((batch_size, height, width, channels), 0.0, 255.0)
    labels = tf.random.uniform((batch_size,), 0, classes, tf.int32)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def training_rates(model, case, config):
    """Images per second and per CPU-second of `model.fit`, one pair per timed epoch.

    A warm-up fit traces and compiles the step first. Images per CPU-second hardly move when
    other processes share the cores, so they compare settings on a busy machine.
    """
    spe = config.steps_per_execution
    steps = -(-case.steps // spe) * spe  # whole executions only
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        steps_per_execution=spe,
        jit_compile=config.jit_compile,
    )
    data = synthetic_batches(model, case.batch_size)
    fit = dict(verbose=0, shuffle=False)  # a repeated tf.data batch: nothing to shuffle
    model.fit(data, steps_per_epoch=2 * spe, epochs=1, **fit)  # trace + first executions
    timer = EpochTimer()
    model.fit(data, steps_per_epoch=steps, epochs=config.repeats, callbacks=[timer], **fit)
    images = steps * case.batch_size
    return [images / s for s in timer.seconds], [images / s for s in timer.cpu_seconds]


def inference_rates(model, case, config):
    """Images/s of the compiled inference-mode forward pass, one rate per timed round.

    `measure_model` times tfresnet models twice: as trained, and BN-folded
    (`inference.fold_batch_norm`), the form `export_for_serving` serves and the one reported
    as `infer_img_s`; keras.applications is timed as Keras gives it.

    A `tf.function` over `model(x, training=False)`, not `model.predict`: predict timed the
    same 10.23 s for ResNet-50 in fp32 and bf16 and for keras.applications' ResNet-50, so
    it measured something other than the model.
    """
    images, _ = next(iter(synthetic_batches(model, case.batch_size)))
    forward = tf.function(
        lambda x: tf.reduce_sum(model(x, training=False)), jit_compile=config.jit_compile
    )
    forward(images).numpy()  # trace
    rates = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        for _ in range(case.steps):
            forward(images).numpy()
        rates.append(case.steps * case.batch_size / (time.perf_counter() - start))
    return rates


def peak_rss_mb():
    """This process's resident-set high-water mark (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def measure_model(name, precision, config):
    """All the figures of one (model, precision); runs in its own process (see `run`)."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    case = case_for(name, config)
    model = build(name, case.image_size, config.bn)
    macs = models.count_flops(model)
    train_rates, cpu_rates = training_rates(model, case, config)
    train = statistics.median(train_rates)
    infer_unfolded = statistics.median(inference_rates(model, case, config))
    infer = infer_unfolded
    if name != KERAS_BASELINE:  # tfresnet serves the BN-folded form (export_for_serving)
        served = inference.fold_batch_norm(model)
        infer = statistics.median(inference_rates(served, case, config))
    return {
        "kind": "model",
        "model": name,
        "precision": precision,
        "bn": "keras" if name == KERAS_BASELINE else config.bn,
        "image_size": case.image_size,
        "batch_size": case.batch_size,
        "steps": case.steps,
        "params": models.count_params(model),
        "macs": macs,
        "train_img_s": round(train, 2),
        "train_img_cpu_s": round(statistics.median(cpu_rates), 2),
        "infer_img_s": round(infer, 2),
        "infer_unfolded_img_s": round(infer_unfolded, 2),
        "train_gflop_s": round(train * 3 * 2 * macs / 1e9, 2),
        "infer_gflop_s": round(infer * 2 * macs / 1e9, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def matmul_peak(precision, size, repeats=10):
    """GFLOP/s of an n x n x n `tf.matmul` in the policy's compute dtype.

    The best of `repeats` short timings: a peak, so the quietest moment of a shared machine.
    """
    dtype = keras.mixed_precision.Policy(precision).compute_dtype
    a = tf.cast(tf.random.uniform((size, size)), dtype)
    b = tf.cast(tf.random.uniform((size, size)), dtype)
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.linalg.matmul(a, b)[:1, :1]))
    calls = max(1, int(1e10 // (2 * size**3)))  # about 10 GFLOP per timing
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return {
        "kind": "matmul_peak",
        "precision": precision,
        "dtype": dtype,
        "size": size,
        "gflop_s": round(calls * 2 * size**3 / best / 1e9, 2),
    }


def pipeline_rate(config, images=10_000, batch_size=128, repeats=3):
    """Images/s of the training input pipeline (`pipeline.make_pipeline`) on 32x32 uint8 CIFAR data.

    The pipeline the trainer uses: cache, shuffle, pad 4 + random crop + flip in a parallel
    map, batch 128, prefetch. It must run many times faster than training consumes images.
    """
    if config.quick:
        images, repeats = 1024, 1
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    info = data_lib.DataInfo(
        name="synthetic_cifar",
        num_classes=10,
        image_shape=(32, 32, 3),
        style="cifar",
        flip=True,
        pixel_mean=np.zeros((32, 32, 3), "float32"),
        pixel_std=np.ones((), "float32"),
        sizes={"train": images},
    )
    split = tf.data.Dataset.from_tensor_slices((pixels, np.zeros(images, "int32")))
    batches = pipeline.make_pipeline(split, info, batch_size=batch_size, training=True)
    for _ in batches:  # first epoch fills the cache and starts the threads
        pass
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(int(x.shape[0]) for x, _ in batches)
        best = min(best, time.perf_counter() - start)
    return {"kind": "input_pipeline", "batch_size": batch_size, "img_s": round(count / best, 1)}


def host_info():
    """What the numbers were measured on, including the load other processes put on it."""
    from tfresnet.machine import cpu_info

    return {
        "kind": "host",
        "cpu": cpu_info().model,
        "cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


# --- the run --------------------------------------------------------------------------------


def in_fresh_process(fn, *args):
    """`fn(*args)` in a new Python process (spawned: no inherited TF state, its own peak RSS).

    However this call ends (an error, Ctrl-C, SIGTERM), the worker is terminated with it.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # __exit__ terminates it
        return pool.apply(fn, args)


def run(config, emit=print):
    """Measure everything `config` asks for; `emit` gets each JSON record as it is made."""
    records = []

    def record(item):
        item = {**item, "quick": config.quick} if config.quick else item
        records.append(item)
        emit(json.dumps(item))

    record(host_info())
    size = 256 if config.quick else config.matmul_size
    for precision in config.precisions:
        record(matmul_peak(precision, size))
    if config.pipeline:
        record(pipeline_rate(config))
    peaks = {r["precision"]: r["gflop_s"] for r in records if r["kind"] == "matmul_peak"}
    for name in config.models:
        for precision in config.precisions:
            item = in_fresh_process(measure_model, name, precision, config)
            item["peak_fraction"] = round(item["train_gflop_s"] / peaks[precision], 3)
            item["steps_per_execution"] = config.steps_per_execution
            item["jit_compile"] = config.jit_compile
            record(item)
    return records


TABLE = (  # (column, record key, format) of the table of docs/performance.md
    ("model", "model", ""),
    ("precision", "precision", ""),
    ("BN", "bn", ""),
    ("image", "image_size", ""),
    ("batch", "batch_size", ""),
    ("train img/s", "train_img_s", ".1f"),
    ("infer img/s", "infer_img_s", ".1f"),
    ("infer img/s, BN unfolded", "infer_unfolded_img_s", ".1f"),
    ("train img/CPU-s", "train_img_cpu_s", ".1f"),
    ("train GFLOP/s", "train_gflop_s", ".1f"),
    ("of matmul peak", "peak_fraction", ".0%"),
    ("peak RSS MB", "peak_rss_mb", ".0f"),
)


def markdown_table(records):
    """The model records as the table of docs/performance.md, then the peaks and the pipeline."""
    rows = [[format(r[key], fmt) for _, key, fmt in TABLE] for r in records if r["kind"] == "model"]
    lines = [markdown.table([c for c, _, _ in TABLE], rows, align="lll" + "r" * 9)]
    for r in records:
        if r["kind"] == "matmul_peak":
            lines.append(f"\nmatmul peak {r['dtype']}: {r['gflop_s']:.0f} GFLOP/s (n={r['size']})")
        elif r["kind"] == "input_pipeline":
            lines.append(f"\ninput pipeline (CIFAR augmentation): {r['img_s']:.0f} img/s")
    return "\n".join(lines)


# --- the command line -----------------------------------------------------------------------

QUICK_MODELS = ("resnet8",)  # --quick without --models


def define_flags(fv):
    """Defaults from `BenchConfig`."""
    d = {f.name: f.default for f in dataclasses.fields(BenchConfig)}
    flags.DEFINE_list("models", list(d["models"]), "Models to time.", flag_values=fv)
    flags.DEFINE_list(
        "precisions",
        list(d["precisions"]),
        f"Keras dtype policies among {', '.join(PRECISIONS)}.",
        flag_values=fv,
    )
    flags.DEFINE_integer("steps", d["steps"], "Timed steps/epoch; 0: per model.", flag_values=fv)
    flags.DEFINE_integer("repeats", d["repeats"], "Timed epochs; median reported.", flag_values=fv)
    flags.DEFINE_integer("image_size", d["image_size"], "0: per model.", flag_values=fv)
    flags.DEFINE_integer("batch_size", d["batch_size"], "0: per model.", flag_values=fv)
    flags.DEFINE_integer(
        "steps_per_execution", d["steps_per_execution"], "Steps per call.", flag_values=fv
    )
    flags.DEFINE_bool("jit_compile", d["jit_compile"], "Compile with XLA.", flag_values=fv)
    flags.DEFINE_enum("bn", d["bn"], BN_KINDS, "BatchNormalization to use.", flag_values=fv)
    flags.DEFINE_integer("matmul_size", d["matmul_size"], "Peak matmul n.", flag_values=fv)
    flags.DEFINE_bool("pipeline", d["pipeline"], "Time the input pipeline.", flag_values=fv)
    flags.DEFINE_bool(
        "quick", d["quick"], f"Smoke mode (seconds); models {QUICK_MODELS}.", flag_values=fv
    )
    flags.DEFINE_string("output", "", "Also write the JSON lines to this file.", flag_values=fv)


def config_from_flags(fv):
    quick_models = QUICK_MODELS if fv["models"].using_default_value else fv.models
    return BenchConfig(
        models=tuple(quick_models if fv.quick else fv.models),
        precisions=tuple(fv.precisions),
        steps=fv.steps,
        repeats=1 if fv.quick and fv["repeats"].using_default_value else fv.repeats,
        image_size=fv.image_size,
        batch_size=fv.batch_size,
        steps_per_execution=fv.steps_per_execution,
        jit_compile=fv.jit_compile,
        bn=fv.bn,
        matmul_size=fv.matmul_size,
        pipeline=fv.pipeline,
        quick=fv.quick,
    )


def body(fv):
    """Run the benchmark the flags describe; print JSON lines (and --output) and the table."""
    config = config_from_flags(fv)
    if fv.output and os.path.isdir(fv.output):
        raise ValueError(f"--output {fv.output!r} is a directory; give a file name.")
    records = []

    def measure(target=None):
        """Print each JSON line as it comes, and write it to `target` when given."""
        with open(target, "w") if target else contextlib.nullcontext() as out:

            def emit(line):
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()

            # Each model runs in a fresh process, whose TensorFlow prints its notices again.
            level = None if fv.verbose_logs else native_logs.level_in_effect()
            with native_logs.filtered_stderr(level):
                records.extend(run(config, emit))

    if fv.output:  # lines go to a temporary name as they come; --output appears whole
        files.write_atomically(fv.output, measure)
    else:
        measure()
    print("\n" + markdown_table(records))


def main(argv=None) -> int:
    """`python -m benchmarks.bench [flags]`; returns the exit status (2: bad flags)."""
    return benchmarks.run("bench", define_flags, body, argv)


if __name__ == "__main__":
    # SIGTERM ends the run as Ctrl-C does: the measuring process is terminated with it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    sys.exit(main())
