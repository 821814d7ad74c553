"""deploy/: the TFJob manifest and the Dockerfile say what tfresnet expects of a cluster."""

import contextlib
import io
import json

import pytest

yaml = pytest.importorskip("yaml", reason="the manifest test reads YAML: pip install pyyaml")

import tensorflow as tf  # noqa: E402
from repo_files import ROOT, repo_file  # noqa: E402

from tfresnet import cli, cluster, distribute, rundir, runlock  # noqa: E402
from tfresnet.train import TrainingError  # noqa: E402


@pytest.fixture(scope="module")
def job():
    with open(repo_file("deploy/tfjob.yaml")) as f:
        return yaml.safe_load(f)


def test_a_workers_backup_is_on_storage_every_worker_reads(job):
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = container["volumeMounts"][0]["mountPath"]
    run_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--run_dir="))
    assert run_dir.startswith(mount + "/")


def test_the_container_args_are_a_valid_train_command(job):
    args = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["tfresnet", *args, "--help"]) == 0  # flags parse; --help stops there


@pytest.mark.parametrize(
    "error, retried",
    [
        (tf.errors.UnavailableError(None, None, "Socket closed"), True),  # a lost peer
        (runlock.RunDirInUse("busy"), True),
        (cluster.WorkersMissing("2 of 3 workers"), True),
        (rundir.Preempted(0, 3), True),  # SIGTERM inside training: backed up
        (cli.Terminated(), True),  # SIGTERM anywhere else
        (KeyboardInterrupt(), True),
        (ValueError("Unknown model name 'x'"), False),  # fix the command first
        (TrainingError("loss is NaN"), False),
        (PermissionError(13, "Permission denied", "/runs"), False),
    ],
)
def test_kubeflow_restarts_a_worker_exactly_when_a_retry_can_succeed(job, error, retried):
    # The manifest's ExitCode policy: Kubeflow restarts a pod on statuses 128-255 only.
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicy"] == "ExitCode"
    status, _ = cli.classify_error(error)
    assert (128 <= status <= 255) == retried, status


@pytest.mark.parametrize("index", [0, 1])
def test_the_operators_tf_config_is_what_we_read(job, monkeypatch, index):
    name = job["metadata"]["name"]
    port = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["ports"]
    hosts = [f"{name}-worker-{i}.default.svc:{port[0]['containerPort']}" for i in range(2)]
    # What the training operator sets in each pod.
    tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert cluster.read_tf_config() == tf_config
    assert distribute._auto_strategy_name(None, None) == "multi_worker"


def test_the_dockerfile_copies_what_exists_and_installs_the_package():
    with open(repo_file("deploy/Dockerfile")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY")]
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
    assert any("pip install" in line and line.endswith(" .") for line in lines)
    assert lines[-2:] == ['ENTRYPOINT ["tfresnet"]', 'CMD ["--help"]']
