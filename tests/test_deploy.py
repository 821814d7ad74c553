"""deploy/: the TFJob manifest and the Dockerfile say what tfresnet expects of a cluster."""

import contextlib
import io
import json

import pytest

yaml = pytest.importorskip("yaml", reason="the manifest test reads YAML: pip install pyyaml")

from repo_files import ROOT, repo_file  # noqa: E402

from tfresnet import cli, distribute  # noqa: E402


@pytest.fixture(scope="module")
def job():
    with open(repo_file("deploy/tfjob.yaml")) as f:
        return yaml.safe_load(f)


def test_the_manifest_is_a_restartable_two_worker_tfjob(job):
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2 and worker["restartPolicy"] == "ExitCode"
    assert job["spec"]["runPolicy"]["backoffLimit"] >= 1
    pod = worker["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60  # time for the SIGTERM backup
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow"
    mount = container["volumeMounts"][0]["mountPath"]
    run_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--run_dir="))
    assert run_dir.startswith(mount + "/")  # the backup is on storage every worker reads


def test_the_container_args_are_a_valid_train_command(job):
    args = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["tfresnet", *args, "--help"]) == 0  # flags parse; --help stops there


def test_kubeflow_retries_exactly_our_retryable_exit_codes():
    # Kubeflow's ExitCode policy: 1-127 permanent, 128-255 retryable.
    assert cli.EXIT_USAGE < 128 and cli.EXIT_FAILED < 128
    assert cli.EXIT_RETRY >= 128 and cli.EXIT_PREEMPTED >= 128 and cli.EXIT_INTERRUPTED >= 128


@pytest.mark.parametrize("index", [0, 1])
def test_the_operators_tf_config_is_what_we_read(job, monkeypatch, index):
    name = job["metadata"]["name"]
    port = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["ports"]
    hosts = [f"{name}-worker-{i}.default.svc:{port[0]['containerPort']}" for i in range(2)]
    # What the training operator sets in each pod.
    tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.read_tf_config() == tf_config
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
