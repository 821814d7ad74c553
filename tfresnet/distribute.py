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

A multi-worker start first waits for its peers in Python (`wait_for_peers`:
bounded, and a SIGTERM ends it), and afterwards hands SIGTERM back to the
Python handler that TensorFlow took it from (`_reclaim_sigterm`);
`summed_over_workers` lets every worker agree to stop at the same step.

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
import signal
import socket
import struct
import tempfile
import threading
import time
import warnings

import keras
import tensorflow as tf

STRATEGY_NAMES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
LR_SCALING_RULES = ("linear", "none")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)
# How long a multi-worker start waits for every other worker of TF_CONFIG to come up: pods are
# scheduled and images pulled at different times, so minutes, not seconds.
DEFAULT_PEER_TIMEOUT = 300.0
COLLECTIVE_JOBS = ("chief", "worker")  # the tasks MultiWorkerMirroredStrategy trains on


class WorkersMissing(TimeoutError):
    """Workers of the TF_CONFIG cluster did not come up in time; starting again may find them."""


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


def make_strategy(name="auto", *, num_replicas=None, tpu=None, peer_timeout=DEFAULT_PEER_TIMEOUT):
    """Return the `tf.distribute.Strategy` called `name` (see module doc).

    num_replicas: int or None, replicas for `mirrored`/`one_device`; on a
        CPU-only machine `mirrored` splits the CPU into that many logical
        devices (which must happen before TensorFlow starts).
    tpu: str or None, for `tpu`: "local" on a TPU VM, a Cloud TPU name or a
        "grpc://host:8470" address.
    peer_timeout: seconds `multi_worker` waits for the other workers of
        TF_CONFIG to come up (`wait_for_peers`) before `WorkersMissing`.

    The process's SIGTERM handler is the one it had before (`_reclaim_sigterm`).
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}.")
    check_peer_timeout(peer_timeout)
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
        strategy = _one_device_strategy(num_replicas)
    elif name == "mirrored":
        strategy = _mirrored_strategy(num_replicas)
    elif name == "multi_worker":
        strategy = _multi_worker_strategy(peer_timeout)
    else:
        strategy = _tpu_strategy(tpu)
    _reclaim_sigterm()
    return strategy


def check_peer_timeout(peer_timeout) -> None:
    """ValueError unless `peer_timeout` is a number of seconds > 0."""
    if (
        isinstance(peer_timeout, bool)
        or not isinstance(peer_timeout, int | float)
        or not 0 < peer_timeout < float("inf")
    ):
        raise ValueError(f"peer_timeout must be a number of seconds > 0; got {peer_timeout!r}.")


def _reclaim_sigterm():
    """Give SIGTERM back to the handler Python had installed (the `tfresnet` command's, or the
    default that ends the process).

    MultiWorkerMirroredStrategy's start installs TensorFlow's own SIGTERM handler with
    `std::signal` (the coordination service's preemption notifier, set up in
    `EnableCollectiveOps`, tensorflow/core/common_runtime/eager/context_distributed_manager.cc;
    no upstream issue found). It only records the signal, so the process ignores SIGTERM, and a
    Python handler never runs again though `signal.getsignal` still names it. Installing the
    same Python handler again puts it back. Only the main thread may set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:  # None: installed outside Python, left as it is
        signal.signal(signal.SIGTERM, handler)


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
    if task_type == "ps" or "ps" in cluster:
        raise ValueError(
            "TF_CONFIG describes parameter-server training (a 'ps' task), which tfresnet does not "
            "support: it trains with MultiWorkerMirroredStrategy, where every task is a 'chief' "
            "or a 'worker' running `tfresnet train --strategy=multi_worker`. " + hint
        )
    if task_type not in COLLECTIVE_JOBS:
        raise ValueError(
            f"TF_CONFIG task type {task_type!r} is not supported; allowed: "
            f"{', '.join(COLLECTIVE_JOBS)} (each running `tfresnet train "
            f"--strategy=multi_worker`). {hint}"
        )
    if task_type not in cluster or task_id not in spec.task_indices(task_type):
        task = {"type": task_type, "index": task_id}
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {cluster}. {hint}")
    return {"cluster": cluster, "task": {"type": task_type, "index": task_id}}


def _multi_worker_strategy(peer_timeout):
    """MultiWorkerMirroredStrategy from TF_CONFIG, created at program start."""
    wait_for_peers(read_tf_config(), peer_timeout)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise RuntimeError(
            "make_strategy('multi_worker') must run before TensorFlow starts "
            "(before any op, model or other strategy): collective ops are "
            f"configured at program startup. TensorFlow said: {err}"
        ) from err


def wait_for_peers(tf_config: dict, timeout: float, poll_s: float = 0.5) -> None:
    """Return once every other chief and worker task of `tf_config` (`read_tf_config`) accepts
    connections at its address; `WorkersMissing`, naming the others, after `timeout` seconds.

    MultiWorkerMirroredStrategy's own wait for its peers lasts up to an hour (the coordination
    service's device-propagation barrier) inside one call that holds the interpreter, so no
    SIGTERM handler runs until it returns. This wait is Python: a SIGTERM ends it at once, and
    TensorFlow's starts only when all are there. Meanwhile this worker listens on its own port
    (accepting and closing at once), so its peers find it as it finds them; once its peers are
    seen, the port is free again for TensorFlow's server.
    """
    me = (tf_config["task"]["type"], tf_config["task"]["index"])
    cluster = tf_config["cluster"]
    peers = [
        (job, index, address)
        for job in COLLECTIVE_JOBS
        for index, address in enumerate(cluster.get(job, []))
        if (job, index) != me
    ]
    own = cluster[me[0]][me[1]]
    listener = _listen(own)
    deadline = time.monotonic() + timeout
    try:
        while True:
            _drain(listener)
            peers = [peer for peer in peers if not _accepts(peer[2])]
            if not peers:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{job} {index} ({address})" for job, index, address in peers)
                raise WorkersMissing(
                    f"gave up after {timeout:g} s waiting for {names} of TF_CONFIG's cluster: "
                    f"{'it' if len(peers) == 1 else 'they'} never came up. Start every worker "
                    "(or allow more time with --peer_timeout), then run the same command again."
                )
            time.sleep(poll_s)
    finally:
        listener.close()


def _split_address(address):
    """("host", port) of a TF_CONFIG "host:port" (IPv6 as "[::1]:port")."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _listen(address):
    """A non-blocking socket listening on `address`'s port, on every interface (TensorFlow's
    server listens there too); a clear OSError if another process holds the port."""
    _, port = _split_address(address)
    dual = socket.has_dualstack_ipv6()
    try:
        listener = socket.create_server(
            ("", port), family=socket.AF_INET6 if dual else socket.AF_INET, dualstack_ipv6=dual
        )
    except OSError as err:
        raise OSError(
            f"cannot listen on port {port}, this worker's address in TF_CONFIG ({address}): "
            f"{err.strerror}. Another process holds it (a worker of an earlier start still "
            "running?); free it or give this worker another port."
        ) from None
    listener.setblocking(False)
    return listener


def _drain(listener):
    """Accept and close the peers' pending connections (with a reset: no TIME_WAIT left)."""
    while True:
        try:
            connection, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


def _accepts(address, timeout_s=2.0):
    """Whether something accepts TCP connections at `address` (a peer waiting, or its server)."""
    try:
        socket.create_connection(_split_address(address), timeout=timeout_s).close()
    except (OSError, ValueError):  # refused, unreachable, a name not (yet) in DNS
        return False
    return True


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


def summed_over_workers(strategy):
    """None with one worker; under multi-worker training, a function that sums a list of small
    non-negative integers (below 2**24 in all) over every replica of the cluster.

    It is an all-reduce: every worker must call it at the same points (a callback's batch end)
    and all get the same sums, exact (integers in float32), so decisions made from them agree:
    what lets every worker stop at the same step when only some were asked to.
    """
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
    "DEFAULT_PEER_TIMEOUT",
    "STRATEGY_NAMES",
    "WorkersMissing",
    "check_peer_timeout",
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
    "summed_over_workers",
    "wait_for_peers",
    "writable_dir",
]
