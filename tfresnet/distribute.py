"""Distribution strategies for `model.fit`, and what training needs to know of them.

`make_strategy(name)` builds one of: one_device, mirrored (all GPUs, or N logical CPUs for tests),
multi_worker (MultiWorkerMirroredStrategy over TF_CONFIG's cluster), tpu, or auto (the first
that applies). TF reads TF_CONFIG with `TFConfigClusterResolver`, where a typo surfaces as a hang,
and waits for the peers for up to an hour, deaf to SIGTERM: `read_tf_config` gives each problem a
one-line message, and `wait_for_peers` a bounded wait. Call `multi_worker_compatible(model)`
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
import json
import math
import os
import shutil
import socket
import struct
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from tfresnet import compat

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


def check_peer_timeout(name: str, value) -> None:
    """ValueError unless `value` is a number of seconds > 0 (a `config.setting` check)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a number of seconds > 0; got {value!r}.")


def read_tf_config() -> dict:
    """Check TF_CONFIG as TensorFlow's `TFConfigClusterResolver` (MultiWorkerMirroredStrategy's)
    reads it; return `{"cluster": {job: [host:port, ...]}, "task": {"type": job, "index": i}}`."""
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


def wait_for_peers(tf_config: dict, timeout: float, poll_s: float = 0.5) -> None:
    """Return once every other chief and worker task of `tf_config` (`read_tf_config`) accepts
    connections at its address; `WorkersMissing`, naming the others, after `timeout` seconds.

    TF's own wait (up to an hour) holds the interpreter, so no SIGTERM handler runs; this one is
    Python, and TF's starts only when all are there. Meanwhile this worker listens on its own port
    (accepting and closing at once) so its peers find it; then the port is free again for TF.
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
