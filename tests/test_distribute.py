"""Tests for tfresnet.distribute: strategies, helpers and multi-worker fit.

Set-ups that must exist before TensorFlow starts (2 logical CPUs, a
2-worker MultiWorkerMirroredStrategy cluster on 127.0.0.1) run in fresh
processes from tests/distribute_worker.py; their numbers are compared here
with an in-process reference run of the same seeded toy model.
"""

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import cluster as cluster_lib
from tfresnet import compat
from tfresnet import distribute as dist

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "distribute_worker.py")
TIMEOUT_S = 150  # one scenario; a cold TF import alone takes ~15 s on 2 busy cores

_spec = importlib.util.spec_from_file_location("distribute_worker", WORKER)
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


class FakeStrategy:
    """Only what the batch helpers read from a strategy."""

    def __init__(self, replicas):
        self.num_replicas_in_sync = replicas


@pytest.fixture
def float32_policy():
    """Reference runs need float32, whatever another test left behind."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.fixture
def no_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


# --------------------------------------------------------------------------
# make_strategy and its errors (in process)
# --------------------------------------------------------------------------


def test_unknown_strategy_name_lists_allowed_names():
    with pytest.raises(ValueError, match="one_device.*mirrored.*multi_worker.*tpu"):
        dist.make_strategy("horovod")


def test_auto_on_a_cpu_machine_is_one_device(no_tf_config):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("auto picks GPUs here")
    strategy = dist.make_strategy()
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1
    assert strategy.extended.should_checkpoint  # the chief: writes the run directory


def test_auto_with_tf_config_means_multi_worker(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        dist.make_strategy("auto")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="one_device", num_replicas=2), "exactly one replica"),
        (dict(name="mirrored", num_replicas=0), "positive int"),
        (dict(name="tpu", tpu="local", num_replicas=2), "from the cluster"),
    ],
)
def test_bad_replica_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dist.make_strategy(**kwargs)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{oops", "not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "'cluster' with a 'worker' list"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "needs 'task'"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
            "is not in its cluster",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
            "is not in its cluster",
        ),
        (  # TFConfigClusterResolver alone would take int(0.5), worker 0
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0.5}}',
            r"must be a JSON integer; got 0\.5 \(float\)",
        ),
        (
            '{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}',
            "not a valid cluster description",
        ),
        ("5", "not a valid cluster description"),
    ],
)
def test_multi_worker_explains_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message) as err:
        dist.make_strategy("multi_worker")
    assert '"worker": ["host0:12345", "host1:12345"]' in str(err.value)  # the example


def test_read_tf_config_gives_what_the_resolver_read(monkeypatch):
    tf_config = {
        "cluster": {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]},
        "task": {"type": "worker", "index": 1},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert cluster_lib.read_tf_config() == tf_config


def test_multi_worker_after_tf_started_is_a_clear_error(monkeypatch):
    tf.config.list_logical_devices("CPU")  # starts TensorFlow in this process
    ports = free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    with socket.create_server(("127.0.0.1", ports[1])):  # the peer is up
        with pytest.raises(RuntimeError, match="must run before TensorFlow starts"):
            dist.make_strategy("multi_worker")


def test_waiting_for_peers_gives_up_naming_the_missing_ones_and_frees_the_port():
    ports = free_ports(3)
    cluster = {
        "chief": [f"127.0.0.1:{ports[0]}"],
        "worker": [f"127.0.0.1:{ports[1]}", f"localhost:{ports[2]}"],
    }
    config = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    start = time.monotonic()
    with socket.create_server(("127.0.0.1", ports[0])):  # the chief is up, worker 1 is not
        with pytest.raises(cluster_lib.WorkersMissing) as missing:
            cluster_lib.wait_for_peers(config, timeout=0.5, poll_s=0.1)
    assert str(missing.value).startswith(
        f"gave up after 0.5 s waiting for worker 1 (localhost:{ports[2]}) of TF_CONFIG's "
        "cluster: it never came up."
    )
    assert time.monotonic() - start < 10
    socket.create_server(("", ports[1])).close()  # free again for TensorFlow's server


def test_two_workers_waiting_for_each_other_both_go_on():
    """Each worker listens on its own port while it waits, so two that wait find each other;
    one that goes on listens there with TensorFlow's server instead (here a plain socket)."""
    import threading

    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    went_on = []

    def worker(index):
        cluster_lib.wait_for_peers(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}, 30
        )
        with socket.create_server(("", ports[index])):  # its TensorFlow server
            went_on.append(index)
            time.sleep(3)  # long enough for the other to see it

    other = threading.Thread(target=worker, args=(1,))
    other.start()
    worker(0)
    other.join(timeout=30)
    assert sorted(went_on) == [0, 1]


def test_make_strategy_leaves_sigterm_to_the_handler_it_found():
    """TensorFlow's multi-worker start takes SIGTERM over in C++; `make_strategy` installs the
    Python handler again. Simulated: the C-level handler replaced, as TensorFlow's `std::signal`
    does, by putting the default disposition in place behind Python's back."""
    import ctypes
    import signal

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        libc = ctypes.CDLL(None)
        libc.signal.restype = ctypes.c_void_p
        libc.signal(signal.SIGTERM, ctypes.c_void_p(1))  # SIG_IGN at the C level
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert seen == []  # Python's handler no longer runs, though getsignal still names it
        dist.make_strategy("one_device")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_tpu_without_a_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Could not resolve a TPU from tpu=None"):
        dist.make_strategy("tpu")


def test_tpu_local_without_a_tpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="No TPU found for tpu='local'"):
        dist.make_strategy("tpu", tpu="local")


def test_logical_cpus_after_tf_started_is_a_clear_error():
    have = len(tf.config.list_logical_devices("CPU"))  # starts TensorFlow
    dist.configure_logical_cpus(have)  # already so: fine
    with pytest.raises(RuntimeError, match=r"configure_logical_cpus\(\d+\) came too late"):
        dist.configure_logical_cpus(have + 1)


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True])
def test_logical_cpus_needs_a_positive_int(n):
    with pytest.raises(ValueError, match="positive int"):
        dist.configure_logical_cpus(n)


# --------------------------------------------------------------------------
# Batch, learning-rate, chief and sharding helpers (in process)
# --------------------------------------------------------------------------


def test_per_replica_batch_checks_divisibility():
    assert dist.per_replica_batch_size(512, FakeStrategy(8)) == 64
    with pytest.raises(ValueError, match=r"multiple of the 4 replicas.*4, 8, 12"):
        dist.per_replica_batch_size(10, FakeStrategy(4))


def test_scaled_learning_rate_linear_and_none():
    assert dist.scaled_learning_rate(0.1, 1024, base_batch=256) == pytest.approx(0.4)
    assert dist.scaled_learning_rate(0.1, 64) == pytest.approx(0.05)
    assert dist.scaled_learning_rate(0.1, 1024, rule="none") == 0.1
    with pytest.raises(ValueError, match=r"Unknown rule 'sqrt'; allowed: linear, none"):
        dist.scaled_learning_rate(0.1, 1024, rule="sqrt")


def test_single_worker_is_chief_and_writes_to_path(tmp_path):
    strategy = dist.make_strategy("one_device")
    target = tmp_path / "export"
    with dist.writable_dir(str(target), strategy) as where:
        assert where == str(target)
        (target / "model.keras").write_text("x")
    assert (target / "model.keras").exists()


def test_shard_policy_is_file_only_with_a_file_for_every_worker():
    policies = tf.data.experimental.AutoShardPolicy
    assert dist.shard_policy(4, 2) == policies.FILE
    assert dist.shard_policy(2, 2) == policies.FILE
    assert dist.shard_policy(1, 2) == policies.DATA  # a worker would get no file
    assert dist.shard_policy(3, 4) == policies.DATA
    assert dist.shard_policy(1024, 1) == policies.DATA  # one pipeline reads everything anyway
    assert dist.shard_policy(None, 8) == policies.DATA  # in memory: no files to split
    with pytest.raises(ValueError, match="num_workers must be a positive int; got 0"):
        dist.shard_policy(4, 0)


def test_single_machine_strategies_have_one_input_pipeline():
    assert dist.input_pipelines(dist.make_strategy("one_device")) == 1
    assert dist.input_pipelines(tf.distribute.MirroredStrategy(["/cpu:0"])) == 1
    options = dist.data_sharding_options()
    assert options.experimental_distribute.auto_shard_policy == (
        tf.data.experimental.AutoShardPolicy.DATA
    )


# --------------------------------------------------------------------------
# The Keras multi-worker fix, in isolation (in process)
# --------------------------------------------------------------------------


def test_fix_is_a_no_op_outside_multi_worker(float32_policy):
    model = toy.toy_model()
    assert dist.multi_worker_compatible(model) is model
    for name in ("train_step", "test_step", "_maybe_symbolic_build"):
        assert name not in vars(model)


# --------------------------------------------------------------------------
# Subprocess runs: mirrored on 2 logical CPUs
# --------------------------------------------------------------------------


def _worker_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [ROOT, env.get("PYTHONPATH")] if p)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run_scenario(name, out_dir):
    """Run one scenario in a fresh process; return its JSON report."""
    proc = subprocess.run(
        [sys.executable, WORKER, name, str(out_dir)],
        env=_worker_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out_dir / f"{name}.json").read_text())


def cpu_reference(epochs):
    """The toy fit on this process's CPU, no strategy: what runs must match."""
    with tf.device("/cpu:0"):
        model = toy.toy_model()
        history = toy.fit_toy(model, epochs=epochs)
    return model, history


@pytest.fixture
def reference_history(float32_policy):
    return cpu_reference(epochs=2)


@pytest.mark.slow  # real processes: 15-60 s each
def test_mirrored_fit_evaluate_predict_save(tmp_path, reference_history):
    report = run_scenario("mirrored", tmp_path)
    _, reference = reference_history
    assert report["replicas"] == 2
    assert [d.rsplit(":", 2)[-2:] for d in report["devices"]] == [["CPU", "0"], ["CPU", "1"]]
    np.testing.assert_allclose(report["loss"], reference["loss"], rtol=1e-5)
    assert report["predict_shape"] == [toy.NUM_EXAMPLES, toy.NUM_CLASSES]
    assert report["predict_vs_direct"] < 1e-6
    assert report["reload_vs_model"] < 1e-6
    assert report["reload_in_scope_evaluate"] == pytest.approx(report["evaluate"], rel=1e-6)


@pytest.mark.slow  # real processes: 15-60 s each
def test_two_replicas_equal_one_replica_with_sync_bn(tmp_path):
    report = run_scenario("equivalence", tmp_path)
    assert report["max_weight_change"] > 1e-2  # the 3 steps did move the weights
    assert report["max_weight_diff"] < 1e-5
    np.testing.assert_allclose(report["loss_two"], report["loss_one"], rtol=1e-6)


@pytest.mark.slow  # real processes: 15-60 s each
def test_mixed_bfloat16_under_mirrored(tmp_path, reference_history):
    report = run_scenario("bfloat16", tmp_path)
    _, reference = reference_history
    assert report["conv_compute_dtype"] == "bfloat16"
    assert report["conv_variable_dtype"] == "float32"
    assert report["conv_output_dtype"] == "<dtype: 'bfloat16'>"
    assert report["prediction_dtype"] == "float32"
    np.testing.assert_allclose(report["loss"], reference["loss"], atol=0.02)


# --------------------------------------------------------------------------
# Subprocess runs: 2 workers on 127.0.0.1
# --------------------------------------------------------------------------


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (held open while choosing)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_cluster(scenario, out_dir, ports, env_by_task=None, tag="run"):
    """Start one worker per port, wait for all; return their exit codes.

    Each worker gets TF_CONFIG for its task; logs go to out_dir/<tag>-<i>.log.
    Workers still running at the deadline are killed (and reported as None).
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    procs = []
    try:
        for task in range(len(ports)):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": task}})
            log = open(out_dir / f"{tag}-{task}.log", "w")
            env = _worker_env(TF_CONFIG=tf_config, **(env_by_task or {}).get(task, {}))
            procs.append(
                subprocess.Popen(
                    [sys.executable, WORKER, scenario, str(out_dir)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=TIMEOUT_S))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def log_tails(out_dir, tag, n=2):
    return "\n".join(
        (out_dir / f"{tag}-{i}.log").read_text()[-2000:]
        for i in range(n)
        if (out_dir / f"{tag}-{i}.log").exists()
    )


def load_weights(path):
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


@pytest.mark.slow  # real processes: 15-60 s each
def test_multi_worker_fit_matches_single_process(tmp_path, reference_history):
    codes = run_cluster("multi_worker", tmp_path, free_ports(2))
    assert codes == [0, 0], log_tails(tmp_path, "run")
    reference_model, reference = reference_history
    reports = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    weights = [load_weights(tmp_path / f"weights{i}.npz") for i in range(2)]

    assert [r["replicas"] for r in reports] == [2, 2]
    assert max_diff(weights[0], weights[1]) == 0.0  # the workers agree exactly
    assert max_diff(weights[0], reference_model.get_weights()) < 1e-5
    for r in reports:
        np.testing.assert_allclose(r["history"]["loss"], reference["loss"], rtol=1e-5)
    x, y = toy.toy_data()
    expected = reference_model.evaluate(toy.toy_dataset(x, y), verbose=0, return_dict=True)
    assert reports[0]["evaluate"] == pytest.approx(expected, rel=1e-5)
    for i in range(2):
        predictions = np.load(tmp_path / f"predictions{i}.npy")
        np.testing.assert_allclose(predictions, reference_model.predict(x, verbose=0), atol=1e-5)

    assert [r["is_chief"] for r in reports] == [True, False]
    assert reports[0]["export_dir"] == str(tmp_path / "export")
    assert (tmp_path / "export" / "toy.keras").exists()
    assert reports[1]["export_dir_exists_after"] is False  # worker 1's temp dir is gone


@pytest.mark.slow  # real processes: about 60 s
def test_two_workers_read_disjoint_files_of_a_tfds_set(tmp_path):
    """FILE sharding on a 4-file tfds set: each worker's input holds half of every epoch, the
    halves are disjoint and together all 48 examples; resuming mid-epoch replays the same
    batches; and `fit_model` trains on that input."""
    sys.path.insert(0, HERE)
    from test_data import write_sharded_tfds

    write_sharded_tfds(tmp_path / "tfds", examples=48, shards=4)
    codes = run_cluster("file_shards", tmp_path, free_ports(2))
    assert codes == [0, 0], log_tails(tmp_path, "run")
    reports = [json.loads((tmp_path / f"shards{i}.json").read_text()) for i in range(2)]
    for r in reports:
        assert r["policy"] == "FILE" and r["distributed"] and r["steps"] == 6
        assert all(len(labels) == toy.BATCH // 2 for labels in r["step_labels"])  # per replica
    for epoch in range(2):
        mine, theirs = (r["epochs"][epoch] for r in reports)
        assert len(mine) == len(theirs) == 24
        assert not set(mine) & set(theirs)
        assert sorted(mine + theirs) == list(range(48))
    for r in reports:
        assert set(r["epochs"][0]) == set(r["epochs"][1])  # the same files every epoch
        assert r["epochs"][0] != r["epochs"][1]  # in a new order
        assert r["resumed_labels"] == r["step_labels"][6 + 2 :]  # epoch 1 from step 2
        assert r["resumed_sums"] == r["step_sums"][6 + 2 :]  # with the same augmentation
    assert reports[0]["step_sums"] != reports[1]["step_sums"]
    assert reports[0]["epochs_trained"] == reports[1]["epochs_trained"] == [1, 2]
    assert reports[0]["loss"] == reports[1]["loss"]
    assert all(np.isfinite(reports[0]["loss"]))
    assert (tmp_path / "run" / "model.keras").exists()


def _start_train_workers(ports, run_dir, *flags, tasks=None):
    """`tfresnet train` as the workers `tasks` (default: all) of a loopback cluster of one worker
    per port; returns the processes. TensorFlow's log level is the command's own (native lines
    hidden)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(len(ports)) if tasks is None else tasks:
        env = _worker_env(
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        )
        env.pop("TF_CPP_MIN_LOG_LEVEL")
        argv = [sys.executable, "-m", "tfresnet.cli", "train", "--strategy=multi_worker"]
        argv += ["--model=cifar_resnet8", "--batch_size=64", f"--run_dir={run_dir}"]
        argv += ["--verbose=0", "--export=false", *flags]
        procs.append(
            subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    return procs


def _finish(procs, timeout=400):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()


@pytest.mark.slow
def test_multi_worker_resumes_after_a_worker_is_killed(tmp_path):
    """SIGKILL one worker of the real command: the other exits 138 (retryable) saying where
    the restart resumes; the same command on both then finishes with every epoch once."""
    from tfresnet import rundir

    ports, run_dir = free_ports(2), tmp_path / "run"
    procs = _start_train_workers(ports, run_dir, "--epochs=6")
    deadline = time.time() + 300
    while rundir.load_state(str(run_dir)).epoch < 2 and time.time() < deadline:
        time.sleep(0.2)
    killed_at = rundir.load_state(str(run_dir)).epoch
    assert killed_at >= 2
    procs[1].send_signal(signal.SIGKILL)
    (_, err0), _ = _finish(procs)
    assert procs[0].returncode == 138, err0[-3000:]
    # One line, naming the lost worker (not the survivor, as the first device name in
    # TensorFlow's text had it), without TensorFlow's native lines on the collective's abort.
    assert err0.startswith("error: lost contact with worker 1 (") and err0.count("\n") == 1, err0
    assert "resumes from epoch" in err0

    outputs = _finish(_start_train_workers(free_ports(2), run_dir, "--epochs=6"))
    for out, err in outputs:
        assert "test error" in out, err[-3000:]
    with open(run_dir / "history.csv") as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == list(range(6))
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["segments"]) == 2 and results["segments"][1]["first_epoch"] > killed_at
    assert not (run_dir / "backup").exists()


@pytest.mark.slow  # real processes: a minute or two
def test_sigterm_to_one_worker_backs_up_and_stops_every_worker(tmp_path):
    """A cluster's preemption of the chief alone: every worker stops at the same step with 143,
    the chief's backup holds that step, and the same command on both finishes the run. (Before,
    TensorFlow's own SIGTERM handler swallowed the signal and training went on to the end.)"""
    from tfresnet import rundir

    run_dir = tmp_path / "run"
    procs = _start_train_workers(free_ports(2), run_dir, "--epochs=4")
    deadline = time.time() + 400
    while rundir.load_state(str(run_dir)).epoch < 1 and time.time() < deadline:
        time.sleep(0.1)
    procs[0].send_signal(signal.SIGTERM)
    outputs = _finish(procs)
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 143, err[-3000:]
        assert (
            err.startswith("error: SIGTERM: stopped on request in epoch") and err.count("\n") == 1
        )
    assert outputs[0][1] == outputs[1][1]  # the same epoch and batch on both
    state = rundir.load_state(str(run_dir))
    assert state.epoch >= 1 and rundir.resumable(str(run_dir))

    for out, err in _finish(_start_train_workers(free_ports(2), run_dir, "--epochs=4")):
        assert "test error" in out, err[-3000:]
    with open(run_dir / "history.csv") as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == list(range(4))


@pytest.mark.slow  # real processes: about a minute
def test_a_worker_whose_peer_never_comes_gives_up_or_ends_at_sigterm(tmp_path):
    """Worker 0 of 2 with worker 1 never started: it gives up after --peer_timeout with 138,
    naming worker 1; waiting, it ends at SIGTERM with 143. (Before, it waited silently, deaf to
    SIGTERM, until TensorFlow's own hour-long wait ended.)"""
    import socket

    giving_up, waiting = free_ports(2), free_ports(2)
    first = _start_train_workers(giving_up, tmp_path / "a", "--peer_timeout=5", tasks=[0])[0]
    second = _start_train_workers(waiting, tmp_path / "b", tasks=[0])[0]  # default: 300 s
    deadline = time.time() + 300
    while time.time() < deadline:  # it listens on its port while it waits for its peer
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
            break
        time.sleep(0.2)
    second.send_signal(signal.SIGTERM)
    ((_, err),) = _finish([second], timeout=120)
    assert second.returncode == 143, err
    assert err.startswith("error: SIGTERM: stopped;") and err.count("\n") == 1, err
    ((_, err),) = _finish([first], timeout=120)
    assert first.returncode == 138, err
    assert err == (
        f"error: gave up after 5 s waiting for worker 1 (127.0.0.1:{giving_up[1]}) of "
        "TF_CONFIG's cluster: it never came up. Start every worker (or allow more time with "
        "--peer_timeout), then run the same command again.\n"
    )
    assert not (tmp_path / "a" / "config.json").exists()  # nothing written


@pytest.mark.slow  # real processes: 15-60 s each
def test_tfresnet_train_on_two_workers_agrees(tmp_path):
    """The real command on 2 local workers: same final errors, one run dir written by the chief."""
    run_dir = tmp_path / "run"
    procs = _start_train_workers(free_ports(2), run_dir, "--epochs=2")
    outputs = _finish(procs)
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    summaries = [
        next(line for line in out.splitlines() if "test error" in line).split(", ")[:3]
        for out, _ in outputs
    ]
    assert summaries[0] == summaries[1]  # test error, top-5, train error: identical
    results = json.loads((run_dir / "results.json").read_text())
    assert results["replicas"] == 2 and results["config"]["sync_bn"] is None
    assert sorted(os.listdir(run_dir)) == sorted(
        ["checkpoints", "config.json", "history.csv", "logs", "model.keras", "results.json"]
    )


class _TPUDouble(tf.distribute.TPUStrategy):
    """A TPUStrategy stand-in (no TPU): reduce scales by 1/n as TPUStrategy's `_reduce_to` does."""

    def __init__(self):  # no TPU system to initialise
        self.reduced = []

    def reduce(self, reduce_op, value, axis=None):
        self.reduced.append(reduce_op)
        return tf.nest.map_structure(lambda v: v.values[0] * (1.0 / len(v.values)), value)

    def experimental_local_results(self, value):
        return value.values


def test_the_tpu_build_fix_applies_where_keras_reduces_the_first_batch():
    from tensorflow.python.distribute import values

    double = _TPUDouble()
    images = values.PerReplica((tf.zeros((2, 8, 8, 1)), tf.zeros((2, 8, 8, 1))))
    labels = values.PerReplica((tf.constant([1, 2], tf.int32), tf.constant([3, 4], tf.int32)))
    with pytest.raises(TypeError):  # what Keras' own pre-fit build would hit on a TPU
        double.reduce("MEAN", (images, labels))
    assert dist.builds_from_reduced_batch(double)
    assert dist.is_tpu(double) and not dist.is_tpu(tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert not dist.builds_from_reduced_batch(tf.distribute.OneDeviceStrategy("/cpu:0"))
    seen = {}

    def keras_build(iterator=None, data_batch=None):
        seen.update(iterator=iterator, batch=data_batch)

    double.reduced.clear()
    model = types.SimpleNamespace(_maybe_symbolic_build=keras_build, distribute_strategy=double)
    assert compat.build_from_local_batch(model)
    model._maybe_symbolic_build(iterator=[(0, 0, iter([(images, labels)]))])
    assert seen["iterator"] is None and double.reduced == []  # built without reducing
    assert seen["batch"][1].dtype == tf.int32 and seen["batch"][0].shape == (2, 8, 8, 1)
