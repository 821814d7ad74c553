"""Distribution strategies for `model.fit`, and the helpers training needs.

One entry point, `make_strategy(name)`, builds a `tf.distribute.Strategy`:

    one_device    one GPU (or the CPU)
    mirrored      all GPUs of this machine; or N logical CPUs for tests
    multi_worker  MultiWorkerMirroredStrategy over the cluster in TF_CONFIG
    tpu           TPUStrategy over the TPU named by `tpu`
    auto          the first that applies: `tpu` given -> tpu; TF_CONFIG set
                  -> multi_worker; num_replicas > 1, several devices or
                  several GPUs -> mirrored; else one_device

Keras 3 (checked with 3.15) cannot `fit` under MultiWorkerMirroredStrategy
(keras-team/keras#20585, tensorflow/tensorflow#72388); call
`multi_worker_compatible(model)` after building the model in the strategy's
scope. It patches that model instance only, and only while the bug is there.
Keras 3's BackupAndRestore is not multi-worker safe: runs back up through
`tfresnet.rundir` instead. Known limits of Keras 3.15: keep
`steps_per_execution=1` under mirrored strategies ("You must feed a value for
placeholder tensor", keras#19246), and with several replicas build
BatchNormalization with `synchronized=True` (otherwise each replica keeps its
own moving statistics). Input: `shard_policy` decides FILE or DATA sharding,
`is_tpu` whether batches must have static shapes.

Example:
    strategy = make_strategy("mirrored", num_replicas=2)   # 2 logical CPUs
    with strategy.scope():
        model = build(...)
        model.compile(...)
    multi_worker_compatible(model)                          # no-op here
    model.fit(ds.batch(global_batch_size(32, strategy)))
"""

import contextlib
import functools
import json
import os
import shutil
import tempfile
import warnings

import keras
import tensorflow as tf

STRATEGY_NAMES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
LR_SCALING_RULES = ("linear", "none")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


# --------------------------------------------------------------------------
# Logical CPU devices (mirrored training and its tests on CPU-only machines)
# --------------------------------------------------------------------------


def configure_logical_cpus(n):
    """Split the first physical CPU into `n` logical devices CPU:0..n-1.

    Lets MirroredStrategy run `n` replicas on a CPU-only machine (tests,
    laptops). TensorFlow fixes its devices when the runtime first starts
    (any op, strategy or model), so call this first thing in the program.
    Calling it again with the same `n` is fine.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as err:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == n:
            return
        raise RuntimeError(
            f"configure_logical_cpus({n}) came too late: TensorFlow has "
            f"already initialized its devices ({have} logical CPU(s)). Call "
            "it before anything runs a TensorFlow op or builds a strategy or "
            "model, e.g. as the first statement after `import tensorflow`."
        ) from err


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------


def make_strategy(name="auto", *, num_replicas=None, tpu=None):
    """Return the `tf.distribute.Strategy` called `name` (see module doc).

    num_replicas: int or None, replicas for `mirrored`/`one_device`; on a
        CPU-only machine `mirrored` splits the CPU into that many logical
        devices (which must happen before TensorFlow starts).
    tpu: str or None, for `tpu`: "local" on a TPU VM, a Cloud TPU name or a
        "grpc://host:8470" address.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}.")
    if num_replicas is not None and (
        not isinstance(num_replicas, int) or isinstance(num_replicas, bool) or num_replicas < 1
    ):
        raise ValueError(f"num_replicas must be a positive int or None; got {num_replicas!r}.")
    if name == "auto":
        name = _auto_strategy_name(num_replicas, tpu)
    if name in ("multi_worker", "tpu") and num_replicas:
        raise ValueError(
            f"strategy {name!r} takes its devices from the cluster; do not "
            f"pass num_replicas={num_replicas!r}."
        )
    if name == "one_device":
        return _one_device_strategy(num_replicas)
    if name == "mirrored":
        return _mirrored_strategy(num_replicas)
    if name == "multi_worker":
        return _multi_worker_strategy()
    return _tpu_strategy(tpu)


def _auto_strategy_name(num_replicas, tpu):
    """The rules of "auto", in order: tpu, TF_CONFIG cluster, >1 device."""
    if tpu is not None:
        return "tpu"
    if os.environ.get("TF_CONFIG"):
        return "multi_worker"
    if (num_replicas or 1) > 1:
        return "mirrored"
    if num_replicas is None and len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "one_device"


def _one_device_strategy(num_replicas):
    """OneDeviceStrategy on the first GPU, else the CPU."""
    if num_replicas not in (None, 1):
        raise ValueError(f"one_device runs exactly one replica; got num_replicas={num_replicas!r}.")
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def _mirrored_strategy(num_replicas):
    """MirroredStrategy over N GPUs, N logical CPUs, or all GPUs."""
    if num_replicas is None:
        return tf.distribute.MirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if num_replicas > len(gpus):
            raise ValueError(
                f"num_replicas={num_replicas} but this machine has only {len(gpus)} GPU(s)."
            )
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(num_replicas)])
    configure_logical_cpus(num_replicas)
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_replicas)])


def read_tf_config() -> dict:
    """Check TF_CONFIG as TensorFlow's `TFConfigClusterResolver` reads it; return
    `{"cluster": {job: [host:port, ...]}, "task": {"type": job, "index": i}}`.

    MultiWorkerMirroredStrategy reads the cluster (every worker's host:port) and this process's
    task through that resolver; a typo otherwise surfaces as a hang, so each problem gets a
    one-line message here.
    """
    raw = os.environ.get("TF_CONFIG")
    hint = f"Set it on each worker, e.g. for 2 workers: TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
    if not raw:
        raise ValueError(f"multi_worker needs the TF_CONFIG environment variable. {hint}")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    try:
        spec = resolver.cluster_spec()
        task_type, task_id = resolver.task_type, resolver.task_id
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {raw!r}. {hint}") from None
    except (TypeError, ValueError, AttributeError) as err:  # not an object, a malformed cluster
        raise ValueError(
            f"TF_CONFIG is not a valid cluster description ({err}): {raw!r}. {hint}"
        ) from None
    if not {"worker", "chief"} & set(spec.jobs):
        raise ValueError(f"TF_CONFIG needs a 'cluster' with a 'worker' list. Got {raw!r}. {hint}")
    if task_type is None or task_id is None:
        raise ValueError(f"TF_CONFIG needs 'task': {{'type', 'index'}}. Got {raw!r}. {hint}")
    # The resolver takes int(index), so "1" or 1.5 would pass silently (1.5 as worker 1).
    index = json.loads(raw)["task"]["index"]
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(
            f"TF_CONFIG task index must be a JSON integer; got {index!r} "
            f"({type(index).__name__}). {hint}"
        )
    cluster = spec.as_dict()
    if task_type not in cluster or task_id not in spec.task_indices(task_type):
        task = {"type": task_type, "index": task_id}
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {cluster}. {hint}")
    return {"cluster": cluster, "task": {"type": task_type, "index": task_id}}


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy from TF_CONFIG, created at program start."""
    read_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise RuntimeError(
            "make_strategy('multi_worker') must run before TensorFlow starts "
            "(before any op, model or other strategy): collective ops are "
            f"configured at program startup. TensorFlow said: {err}"
        ) from err


def _tpu_strategy(tpu):
    """TPUStrategy on the TPU that `tpu` names; a clear error if none."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    except (ValueError, RuntimeError, OSError) as err:
        raise ValueError(
            f"Could not resolve a TPU from tpu={tpu!r}: {err}. Pass "
            "tpu='local' on a TPU VM, a Cloud TPU name, or 'grpc://host:8470'."
        ) from err
    if tpu != "local":
        tf.config.experimental_connect_to_cluster(resolver)
    try:
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
        raise RuntimeError(
            f"No TPU found for tpu={tpu!r}; TensorFlow said: {str(err).splitlines()[0][:200]}. "
            "On a TPU VM, install tensorflow-tpu instead of tensorflow (docs/deploy.md)."
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def is_multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return _cluster_workers(strategy) > 1


def _cluster_workers(strategy):
    """The chief and worker tasks in a MultiWorkerMirroredStrategy's cluster (0 if none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver is not None else None
    if spec is None:
        return 0
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)


def is_tpu(strategy) -> bool:
    """True under a TPU strategy: the one place tfresnet asks (static shapes, bfloat16, the
    pre-fit build fix and `steps_per_execution` all follow from it)."""
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


# --------------------------------------------------------------------------
# Keras 3 + MultiWorkerMirroredStrategy (keras-team/keras#20585)
# --------------------------------------------------------------------------


def multi_worker_compatible(model):
    """Make `model.fit/evaluate/predict` work under MultiWorkerMirroredStrategy and TPUs.

    Keras 3's TF trainer has two multi-replica bugs (keras#20585, tf#72388):
    1. Before the first step it builds the model from a batch obtained by
       `strategy.reduce("MEAN", per_replica_batch)`. MWMS cannot do that
       eagerly ("Attempt to convert a value (PerReplica ...)"), and
       TPUStrategy's reduce multiplies by 1/n, a TypeError on int32 labels.
       The build only needs shapes and dtypes, so we build from this worker's
       first replica batch instead (`builds_from_reduced_batch` decides).
    2. Under MWMS it reduces the scalar step logs with `strategy.reduce("MEAN",
       v, axis=0)` ("Invalid reduction dimension 0 for input with 0
       dimensions"). We give every log a leading axis of length 1, so that
       reduction becomes the mean over replicas, as meant.
    Only this model instance is patched (its class, config and saving are
    untouched). Fix 1 is applied where `builds_from_reduced_batch` says the
    bug bites; fix 2 only in multi-worker mode while
    `_keras_reduces_logs_along_axis0()` finds the bug. Returns the model.
    """
    strategy = model.distribute_strategy
    if getattr(model, "_tfresnet_multi_worker_fix", False):
        return model
    if builds_from_reduced_batch(strategy) and hasattr(model, "_maybe_symbolic_build"):
        model._maybe_symbolic_build = _build_from_local_batch(model._maybe_symbolic_build, strategy)
        model._tfresnet_multi_worker_fix = True
    if is_multi_worker(strategy):
        if _keras_reduces_logs_along_axis0():
            model.train_step = _with_replica_axis(model.train_step)
            model.test_step = _with_replica_axis(model.test_step)
        model._tfresnet_multi_worker_fix = True
        _warn_unsynchronized_batch_norm(model)
    return model


def builds_from_reduced_batch(strategy) -> bool:
    """Whether Keras' pre-fit build would reduce a batch under `strategy` in a way that fails:
    multi-worker MWMS (no eager reduce) and TPUStrategy (reduce scales int labels by 1/n), and
    only while this Keras still reduces the first batch (`_keras_reduces_first_batch`)."""
    failing = is_multi_worker(strategy) or is_tpu(strategy)
    return failing and _keras_reduces_first_batch()


@functools.cache
def _keras_reduces_first_batch() -> bool:
    """Probe Keras: does its TF trainer build from `strategy.reduce` of the first batch?

    Runs Keras' own `_maybe_symbolic_build` on a stand-in model whose strategy only records
    what it is asked; an upstream fix (no reduce) turns our fix 1 off.
    """
    import contextlib
    import types

    from tensorflow.python.distribute import values

    calls = []
    probe = types.SimpleNamespace(
        reduce=lambda op, value, axis=None: calls.append(op) or value,
        scope=contextlib.nullcontext,
    )
    stand_in = types.SimpleNamespace(
        _distribute_strategy=probe, distribute_strategy=probe, _symbolic_build=lambda **_: None
    )
    try:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        batch = values.PerReplica((tf.constant([1]),))
        TensorFlowTrainer._maybe_symbolic_build(stand_in, iterator=[(0, 0, iter([batch]))])
    except Exception as err:  # Keras moved things: report, and keep the fix (it is harmless).
        warnings.warn(f"Could not probe Keras _maybe_symbolic_build ({err!r}).", stacklevel=3)
        return True
    return bool(calls)


def _warn_unsynchronized_batch_norm(model):
    """Warn about BatchNormalization layers that are not synchronized.

    Keras 3 updates their moving mean/variance on each replica from its own
    share of the batch and never averages them (tf.keras did), so workers
    end up with different inference statistics. synchronized=True computes
    the statistics over the global batch, identical on every replica.
    """
    names = [
        layer.name
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized
    ]
    if names:
        warnings.warn(
            f"{len(names)} BatchNormalization layer(s) ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}) are not synchronized: their "
            "moving statistics will differ between workers. Build them with "
            "synchronized=True for multi-worker training.",
            stacklevel=3,
        )


def _build_from_local_batch(maybe_symbolic_build, strategy):
    """Wrap `_maybe_symbolic_build` to pass this worker's first batch itself.

    Keras peeks one batch of the epoch iterator (then resets it) and only
    uses its shapes and dtypes; the first local replica's batch has those.
    """

    @functools.wraps(maybe_symbolic_build)
    def build(iterator=None, data_batch=None, **kwargs):
        if iterator is not None and data_batch is None:
            data_batch = _first_local_batch(iterator, strategy)
            iterator = None
        return maybe_symbolic_build(iterator=iterator, data_batch=data_batch, **kwargs)

    return build


def _first_local_batch(epoch_iterator, strategy):
    """First batch of a Keras epoch iterator, on this worker's first replica."""
    for item in epoch_iterator:
        batch = next(item[-1])  # Keras yields (begin_step, end_step, iterator)
        return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
    raise ValueError("The training data is empty: no batch to build the model from.")


def _with_replica_axis(step):
    """Wrap a train/test step so each output gets a leading axis of length 1."""

    @functools.wraps(step)
    def step_with_replica_axis(data):
        logs = step(data)
        return tf.nest.map_structure(lambda v: tf.expand_dims(tf.convert_to_tensor(v), 0), logs)

    return step_with_replica_axis


def _keras_reduces_logs_along_axis0():
    """Probe Keras: does it reduce a scalar log with axis=0 under MWMS?

    Calls Keras's own `reduce_per_replica` with a stand-in strategy that
    only records the `axis` it is asked for. axis=0 is the bug; an upstream
    fix (axis=None, or no reduce) turns our fix 2 off.
    """
    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer

        probe = _ReduceProbe()
        tf_trainer.reduce_per_replica(tf.constant(0.0), probe, "auto")
    except Exception as err:  # Keras moved things: report, do not patch.
        warnings.warn(f"Could not probe Keras reduce_per_replica ({err!r}).", stacklevel=3)
        return False
    return probe.axes == [0]


class _ReduceProbe(tf.distribute.MultiWorkerMirroredStrategy):
    """A MWMS look-alike (never initialized) that records `reduce` axes."""

    def __init__(self):  # Deliberately skip the cluster set-up.
        self.axes = []

    @property
    def extended(self):
        return _MultiWorkerModeExtended()

    def reduce(self, reduce_op, value, axis=None):
        self.axes.append(axis)
        return value


class _MultiWorkerModeExtended:
    """Answers the one question Keras asks: are we in multi-worker mode?"""

    def _in_multi_worker_mode(self):
        return True


# --------------------------------------------------------------------------
# Batch size and learning rate
# --------------------------------------------------------------------------


def per_replica_batch_size(global_batch, strategy):
    """Check `global_batch` splits evenly over the replicas; return the share.

    `model.fit` batches the dataset with the global batch and each replica
    gets global/replicas examples; an uneven split changes the effective
    batch per step and breaks sync-BN/equivalence arguments.
    """
    replicas = strategy.num_replicas_in_sync
    if not isinstance(global_batch, int) or global_batch < 1 or global_batch % replicas:
        raise ValueError(
            f"Global batch size {global_batch!r} must be a positive multiple of "
            f"the {replicas} replicas in sync (allowed: {replicas}, "
            f"{2 * replicas}, {3 * replicas}, ...)."
        )
    return global_batch // replicas


def scaled_learning_rate(base_lr, global_batch, base_batch=128, rule="linear"):
    """Learning rate for `global_batch`, given `base_lr` tuned at `base_batch`.

    rule="linear": lr = base_lr * global_batch / base_batch (Goyal et al.
        2017, "Accurate, Large Minibatch SGD"): k times the batch averages
        k times as many examples per step, so take a k times larger step.
        He et al. train CIFAR ResNets with 0.1 at batch 128 and ImageNet
        ones with 0.1 at batch 256. Use a warmup above ~8k examples.
    rule="none": lr = base_lr, whatever the batch.
    """
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"Unknown rule {rule!r}; allowed: {', '.join(LR_SCALING_RULES)}.")
    if global_batch < 1 or base_batch < 1:
        raise ValueError(
            "global_batch and base_batch must be positive; got "
            f"global_batch={global_batch!r}, base_batch={base_batch!r}."
        )
    if rule == "none":
        return base_lr
    return base_lr * global_batch / base_batch


# --------------------------------------------------------------------------
# Who writes files
# --------------------------------------------------------------------------


def writes_run_dir(strategy) -> bool:
    """Whether this process writes the run directory: the chief, or the only worker."""
    return strategy.extended.should_checkpoint


@contextlib.contextmanager
def writable_dir(path, strategy):
    """Yield where this worker writes: `path` on the chief, else a temp dir.

    Under MultiWorkerMirroredStrategy every worker should run the same saves
    (reading an ON_READ-synchronized variable is a collective op that needs
    all workers), but only the chief's copy should land in `path`; the
    others write to a temporary directory removed on exit.
    """
    if writes_run_dir(strategy):
        tf.io.gfile.makedirs(path)
        yield path
        return
    task_id = strategy.cluster_resolver.task_id
    temp = tempfile.mkdtemp(prefix=f"tfresnet-worker{task_id}-")
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --------------------------------------------------------------------------
# Input sharding
# --------------------------------------------------------------------------


def input_pipelines(strategy) -> int:
    """How many input pipelines `strategy` runs: one per worker (MultiWorkerMirroredStrategy)
    or per TPU host; 1 for the single-machine strategies."""
    if is_multi_worker(strategy):
        return _cluster_workers(strategy)
    if is_tpu(strategy):
        return int(strategy.extended.num_hosts)
    return 1


def shard_policy(num_files: int | None, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE or DATA: how `num_workers` input pipelines split a source of `num_files` files.

    FILE (each pipeline reads only its own files, so nobody reads or augments everything) needs
    several pipelines and at least as many files as pipelines, or some would get no data.
    Otherwise DATA: every pipeline builds the whole input and keeps its share of each global
    batch. In-memory sources (`num_files=None`) have no files to split.
    """
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int; got {num_workers!r}.")
    policies = tf.data.experimental.AutoShardPolicy
    if num_files is not None and num_workers > 1 and num_files >= num_workers:
        return policies.FILE
    return policies.DATA


def data_sharding_options() -> tf.data.Options:
    """`tf.data.Options` for a pipeline that Keras distributes itself: DATA sharding, which works
    for any source; a FILE-sharded input is built per worker instead (`pipeline.training_input`)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


__all__ = [
    "STRATEGY_NAMES",
    "configure_logical_cpus",
    "data_sharding_options",
    "input_pipelines",
    "is_multi_worker",
    "is_tpu",
    "make_strategy",
    "multi_worker_compatible",
    "per_replica_batch_size",
    "read_tf_config",
    "scaled_learning_rate",
    "shard_policy",
    "writable_dir",
]
