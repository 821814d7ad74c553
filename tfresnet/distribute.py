"""Distribution strategies for `model.fit`, and what training needs to know of them.

`make_strategy(name)` builds one of: one_device, mirrored (all GPUs, or N logical CPUs for tests),
multi_worker (MultiWorkerMirroredStrategy over TF_CONFIG's cluster), tpu, or auto (the first
that applies). TF_CONFIG is checked and the peers
awaited by `tfresnet.cluster`. Call `multi_worker_compatible(model)`
after building the model in the strategy's scope: Keras 3 cannot `fit` under multi-worker or TPU
strategies without the `compat` fixes.

    strategy = make_strategy("mirrored", num_replicas=2)   # 2 logical CPUs
    with strategy.scope():
        model = build(...)
        model.compile(...)
    multi_worker_compatible(model)                          # no-op here
    model.fit(ds.batch(64))       # the global batch: per_replica_batch_size(64, strategy) == 32
"""

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from tfresnet import compat
from tfresnet.cluster import (
    COLLECTIVE_JOBS,
    DEFAULT_PEER_TIMEOUT,
    check_peer_timeout,
    read_tf_config,
    wait_for_peers,
)

STRATEGY_NAMES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
LR_SCALING_RULES = ("linear", "none")


def configure_logical_cpus(n: int) -> None:
    """Split the first physical CPU into `n` logical devices, so MirroredStrategy runs `n`
    replicas on a CPU-only machine. Call it before TensorFlow starts (again with the same `n`)."""
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
            f"configure_logical_cpus({n}) came too late: TensorFlow has already initialized its "
            f"devices ({have} logical CPU(s)). Call it before anything runs a TensorFlow op or "
            "builds a strategy or model, e.g. as the first statement after `import tensorflow`."
        ) from err


def make_strategy(
    name: str = "auto",
    *,
    num_replicas: int | None = None,
    tpu: str | None = None,
    peer_timeout: float = DEFAULT_PEER_TIMEOUT,
) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGY_NAMES`): `num_replicas` for
    mirrored/one_device (logical CPUs on a CPU-only machine); `tpu`: "local" on a TPU VM, a Cloud
    TPU name or "grpc://host:8470"; `peer_timeout`: seconds multi_worker waits for the other
    workers. The process keeps its SIGTERM handler (`compat.reclaim_sigterm`)."""
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}.")
    check_peer_timeout("peer_timeout", peer_timeout)
    if num_replicas is not None and (
        not isinstance(num_replicas, int) or isinstance(num_replicas, bool) or num_replicas < 1
    ):
        raise ValueError(f"num_replicas must be a positive int or None; got {num_replicas!r}.")
    if name == "auto":
        name = _auto_strategy_name(num_replicas, tpu)
    if name in ("multi_worker", "tpu") and num_replicas:
        raise ValueError(
            f"strategy {name!r} takes its devices from the cluster; do not pass "
            f"num_replicas={num_replicas!r}."
        )
    if name == "one_device":
        strategy = _one_device_strategy(num_replicas)
    elif name == "mirrored":
        strategy = _mirrored_strategy(num_replicas)
    elif name == "multi_worker":
        strategy = _multi_worker_strategy(peer_timeout)
    else:
        strategy = _tpu_strategy(tpu)
    compat.reclaim_sigterm()
    return strategy


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


def _multi_worker_strategy(peer_timeout):
    """MultiWorkerMirroredStrategy from TF_CONFIG, created at program start."""
    wait_for_peers(read_tf_config(), peer_timeout)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise RuntimeError(
            "make_strategy('multi_worker') must run before TensorFlow starts (before any op, "
            f"model or other strategy): collective ops are configured at program startup. "
            f"TensorFlow said: {err}"
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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return _cluster_workers(strategy) > 1


def summed_over_workers(strategy: tf.distribute.Strategy) -> Callable[[list], list] | None:
    """None with one worker; under multi-worker training, a function that sums a list of small
    non-negative integers (below 2**24 in all) over every replica: an all-reduce every worker
    calls at the same points, all getting the same exact sums, so decisions made from them agree
    (every worker stops at the same step when only some were asked to)."""
    if not is_multi_worker(strategy):
        return None

    @tf.function
    def summed(values):
        per_replica = strategy.run(tf.identity, args=(values,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda values: [round(float(v)) for v in summed(tf.constant(values, tf.float32))]


def _cluster_workers(strategy):
    """The chief and worker tasks in a MultiWorkerMirroredStrategy's cluster (0 if none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver is not None else None
    if spec is None:
        return 0
    return sum(spec.num_tasks(job) for job in COLLECTIVE_JOBS if job in spec.jobs)


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    """True under a TPU strategy: the one place tfresnet asks (static shapes, bfloat16, the
    pre-fit build fix and `steps_per_execution` all follow from it)."""
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def multi_worker_compatible(model: keras.Model) -> keras.Model:
    """Make `model.fit/evaluate/predict` work under MultiWorkerMirroredStrategy and TPUs
    (keras-team/keras#20585): `compat.build_from_local_batch` where the pre-fit build fails and,
    with several workers, `compat.add_replica_axis`; each while its probe finds the Keras bug,
    to this model instance only. Returns the model."""
    strategy = model.distribute_strategy
    if getattr(model, "_tfresnet_multi_worker_fix", False):
        return model
    if builds_from_reduced_batch(strategy) and compat.build_from_local_batch(model):
        model._tfresnet_multi_worker_fix = True
    if is_multi_worker(strategy):
        compat.add_replica_axis(model)
        model._tfresnet_multi_worker_fix = True
        _warn_unsynchronized_batch_norm(model)
    return model


def builds_from_reduced_batch(strategy: tf.distribute.Strategy) -> bool:
    """Whether Keras' pre-fit build would reduce a batch under `strategy` in a way that fails:
    multi-worker MWMS (no eager reduce) or TPUStrategy (int labels scaled by 1/n), and only while
    this Keras still reduces the first batch (`compat.keras_reduces_first_batch`)."""
    failing = is_multi_worker(strategy) or is_tpu(strategy)
    return failing and compat.keras_reduces_first_batch()


def _warn_unsynchronized_batch_norm(model):
    """Warn about BatchNormalization layers that are not synchronized: Keras 3 keeps each
    replica's moving statistics apart (tf.keras averaged them), so workers would disagree."""
    names = [
        layer.name
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized
    ]
    if names:
        warnings.warn(
            f"{len(names)} BatchNormalization layer(s) ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}) are not synchronized: their moving statistics "
            "will differ between workers. Build them with synchronized=True for multi-worker "
            "training.",
            stacklevel=3,
        )


def _all_layers(model):
    """The layers of `model` and of the models nested in it."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def per_replica_batch_size(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """Each replica's share of `global_batch`; ValueError unless it splits evenly (an uneven
    split would change the effective batch per step)."""
    replicas = strategy.num_replicas_in_sync
    if not isinstance(global_batch, int) or global_batch < 1 or global_batch % replicas:
        raise ValueError(
            f"Global batch size {global_batch!r} must be a positive multiple of the {replicas} "
            f"replicas in sync (allowed: {replicas}, {2 * replicas}, {3 * replicas}, ...)."
        )
    return global_batch // replicas


def scaled_learning_rate(
    base_lr: float, global_batch: int, base_batch: int = 128, rule: str = "linear"
) -> float:
    """Learning rate for `global_batch`, given `base_lr` tuned at `base_batch`: "linear" scales
    it by global_batch / base_batch (Goyal et al. 2017); "none" keeps it."""
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


def writes_run_dir(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: the chief, or the only worker."""
    return strategy.extended.should_checkpoint


@contextlib.contextmanager
def writable_dir(path: str, strategy: tf.distribute.Strategy) -> Iterator[str]:
    """Yield where this worker writes: `path` on the chief, else a temporary directory removed
    on exit. Every worker runs the same saves (reading synchronized variables is collective);
    only the chief's land in `path`."""
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


def input_pipelines(strategy: tf.distribute.Strategy) -> int:
    """How many input pipelines `strategy` runs: one per worker (MultiWorkerMirroredStrategy)
    or per TPU host; 1 for the single-machine strategies."""
    if is_multi_worker(strategy):
        return _cluster_workers(strategy)
    if is_tpu(strategy):
        return int(strategy.extended.num_hosts)
    return 1


def shard_policy(num_files: int | None, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE or DATA: how `num_workers` input pipelines split a source of `num_files` files (None:
    in memory). FILE (each reads only its own files) needs at least a file per pipeline; DATA:
    every pipeline builds the whole input and keeps its share of each global batch."""
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
