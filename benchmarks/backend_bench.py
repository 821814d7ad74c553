"""Training and inference throughput of a ResNet under the current Keras backend: TF, JAX or torch.

From the root of a clone (once `python -m tfresnet.cli.backend_bench`):

    KERAS_BACKEND=jax python -m benchmarks.backend_bench        # ResNet-50, 224 px, bf16, batch 256
    KERAS_BACKEND=torch python -m benchmarks.backend_bench --jit_compile=true  # torch.compile
    KERAS_BACKEND=jax python -m benchmarks.backend_bench --model=cifar_resnet8 --image_size=8 \
        --batch_size=4 --steps=2 --repeats=1 --precision=float32    # a smoke run (the tests')

    record = run(BackendBenchConfig(model="resnet20", image_size=32))   # in Python

The portable counterpart of `benchmarks.bench`, for comparing backends on the same models (a GPU
is what the defaults are sized for): nothing here imports TensorFlow, and there is no tf.data,
tf.distribute or fused-BN fast path in the loop (under the TF backend the fused BN still runs;
Keras' own `fit` still feeds arrays through tf.data there). Training is `model.fit` on in-memory
uint8 arrays of `steps` batches (SGD momentum 0.9, weight decay 1e-4, as the PyTorch peers),
unshuffled, so each batch is one contiguous slice that Keras copies to the device; the first
epoch (tracing, compilation) is excluded and each later one gives a rate, of which the median is
reported. Inference is `model.predict` over the same arrays, of the BN-folded model tfresnet
serves (`infer_img_s`) and of the model as trained (`infer_unfolded_img_s`). GFLOP/s count 2
FLOPs per multiply-add and 3 forward passes per training step, as `benchmarks.bench` does.
Output: one JSON line per run, with the same keys for rates as `benchmarks.bench` and the
PyTorch peers (`train_img_s`, `infer_img_s`). Under TensorFlow its native log lines are hidden as
the `tfresnet` commands hide them (`--verbose_logs` shows them).
"""

import dataclasses
import importlib.metadata
import json
import statistics
import sys
import time

import keras
import numpy as np
from absl import flags

import benchmarks
from tfresnet import inference, models, precision, specs
from tfresnet.timing import EpochTimer

PRECISIONS = tuple(p for p in precision.PRECISIONS if p != "auto")  # "auto" asks TF
JIT_COMPILE = ("auto", "true", "false")
WEIGHT_DECAY = 1e-4
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@dataclasses.dataclass(frozen=True)
class BackendBenchConfig:
    """One benchmark run; the defaults are a GPU's size (flags fill it)."""

    model: str = "resnet50"  # any build_model name or spec string
    image_size: int = 224  # square inputs, 3 channels
    batch_size: int = 256
    precision: str = "mixed_bfloat16"  # a Keras dtype policy (PRECISIONS)
    steps: int = 20  # training steps per timed epoch, and batches per timed inference round
    repeats: int = 3  # timed epochs and inference rounds; the median rate is reported
    jit_compile: str = "auto"  # compile()'s: "auto" is XLA on JAX, none on torch ("true":
    # torch.compile), XLA on TF only where Keras finds it supported
    steps_per_execution: int = 1  # train steps per compiled call

    def __post_init__(self):
        precision.check(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}."
            )
        if self.jit_compile not in JIT_COMPILE:
            raise ValueError(
                f"Unknown jit_compile {self.jit_compile!r}; allowed: {', '.join(JIT_COMPILE)}."
            )
        for name in ("image_size", "batch_size", "steps", "repeats", "steps_per_execution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        specs.resolve_spec(self.model)  # raises with the allowed names


def device_name():
    """The device the current backend computes on, e.g. "gpu: NVIDIA H200" or "cpu"."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name()}"
        return "cpu"
    if backend == "tensorflow":
        import tensorflow as tf  # the TF backend has imported it already

        gpus = tf.config.list_logical_devices("GPU")
        return f"gpu: {gpus[0].name}" if gpus else "cpu"
    return backend


def backend_version():
    package = BACKEND_PACKAGES.get(keras.backend.backend())
    try:
        return importlib.metadata.version(package) if package else None
    except importlib.metadata.PackageNotFoundError:
        return None


def synthetic_arrays(config, classes):
    """`steps` batches of random uint8 images and labels, in host memory."""
    rng = np.random.default_rng(0)
    count = config.steps * config.batch_size
    images = rng.integers(0, 256, (count, config.image_size, config.image_size, 3), np.uint8)
    return images, rng.integers(0, classes, count).astype("int32")


def training_rate(model, images, labels, config):
    """Median images/s of the timed `model.fit` epochs (the first one, compiling, left out)."""
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile={"auto": "auto", "true": True, "false": False}[config.jit_compile],
        steps_per_execution=config.steps_per_execution,
    )
    timer = EpochTimer()
    model.fit(
        images,
        labels,
        batch_size=config.batch_size,
        epochs=1 + config.repeats,
        shuffle=False,
        verbose=0,
        callbacks=[timer],
    )
    return statistics.median(len(images) / s for s in timer.seconds[1:])


def inference_rate(model, images, config):
    """Median images/s of `model.predict` rounds over `images`, after one compiling batch."""
    model.predict(images[: config.batch_size], batch_size=config.batch_size, verbose=0)
    rates = []
    for _ in range(config.repeats):
        start = time.perf_counter()
        model.predict(images, batch_size=config.batch_size, verbose=0)
        rates.append(len(images) / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(config):
    """The record of one run: the model, where it ran, and its training and inference rates.

    The dtype policy is set for the run and restored after it.
    """
    with precision.policy_scope(config.precision):
        size = config.image_size
        model = models.build_model(
            config.model, input_shape=(size, size, 3), weight_decay=WEIGHT_DECAY
        )
        macs = models.count_flops(model)
        images, labels = synthetic_arrays(config, model.output_shape[-1])
        train = training_rate(model, images, labels, config)
        infer_unfolded = inference_rate(model, images, config)
        infer = inference_rate(inference.fold_batch_norm(model), images, config)
    return {
        "kind": "model",
        "model": config.model,
        "backend": keras.backend.backend(),
        "backend_version": backend_version(),
        "keras": keras.__version__,
        "device": device_name(),
        "precision": config.precision,
        "image_size": size,
        "batch_size": config.batch_size,
        "steps": config.steps,
        "repeats": config.repeats,
        "jit_compile": config.jit_compile,
        "steps_per_execution": config.steps_per_execution,
        "params": models.count_params(model),
        "macs": macs,
        "train_img_s": round(train, 2),
        "infer_img_s": round(infer, 2),
        "infer_unfolded_img_s": round(infer_unfolded, 2),
        "train_gflop_s": round(train * 3 * 2 * macs / 1e9, 2),
        "infer_gflop_s": round(infer * 2 * macs / 1e9, 2),
    }


def run(config, emit=print):
    """Measure `config`; `emit` gets the JSON line, the record is returned."""
    record = measure(config)
    emit(json.dumps(record))
    return record


# --- the command line -----------------------------------------------------------------------


def define_flags(fv):
    """Defaults from `BackendBenchConfig`."""
    d = {f.name: f.default for f in dataclasses.fields(BackendBenchConfig)}
    flags.DEFINE_string("model", d["model"], "Model name or spec string.", flag_values=fv)
    flags.DEFINE_integer("image_size", d["image_size"], "Input height and width.", flag_values=fv)
    flags.DEFINE_integer("batch_size", d["batch_size"], "Batch size.", flag_values=fv)
    flags.DEFINE_enum("precision", d["precision"], PRECISIONS, "Dtype policy.", flag_values=fv)
    flags.DEFINE_integer("steps", d["steps"], "Steps per timed epoch.", flag_values=fv)
    flags.DEFINE_integer("repeats", d["repeats"], "Timed epochs; median kept.", flag_values=fv)
    flags.DEFINE_enum(
        "jit_compile", d["jit_compile"], JIT_COMPILE, "compile()'s jit_compile.", flag_values=fv
    )
    flags.DEFINE_integer(
        "steps_per_execution", d["steps_per_execution"], "Steps per call.", flag_values=fv
    )


def config_from_flags(fv):
    fields = dataclasses.fields(BackendBenchConfig)
    return BackendBenchConfig(**{f.name: fv[f.name].value for f in fields})


def main(argv=None) -> int:
    """`python -m benchmarks.backend_bench [flags]`; returns the exit status (2: bad flags)."""
    return benchmarks.run(
        "backend_bench", define_flags, lambda fv: run(config_from_flags(fv)), argv
    )


if __name__ == "__main__":
    sys.exit(main())
