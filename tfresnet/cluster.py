"""The cluster of a multi-worker run: TF_CONFIG, checked, and the wait for every worker to start.

MultiWorkerMirroredStrategy reads TF_CONFIG through TensorFlow's `TFConfigClusterResolver`, where
a typo surfaces as a hang, and waits for its peers for up to an hour inside one call that no
SIGTERM interrupts; here each problem gets a one-line message and the wait is bounded.
"""

import json
import math
import os
import socket
import struct
import time

import tensorflow as tf

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
