import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo_files import ROOT

from tfresnet import cli
from tfresnet import train as train_lib
from tfresnet.cli import native_logs


def test_usage_and_unknown_command(capsys):
    assert cli.main(["tfresnet"]) == 2
    out, err = capsys.readouterr()
    assert "tfresnet train" in out
    assert err.startswith("error: give a command; allowed: train, evaluate, ")
    assert err.count("\n") == 1
    assert cli.main(["tfresnet", "frob"]) == 2
    assert "unknown command 'frob'; allowed: train, evaluate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus=1"], "Unknown command line flag 'bogus'"),
        (["--model=vgg16"], "Unknown model name 'vgg16'"),
        (["--precision=fp8"], "flag --precision=fp8"),
        (["--batch_size=notanumber"], "flag --batch_size=notanumber"),
    ],
)
def test_bad_train_flags_exit_2_with_a_message(capsys, args, message):
    assert cli.main(["tfresnet", "train", *args]) == 2
    assert message in capsys.readouterr().err


def test_models_command_prints_the_table(capsys):
    assert cli.main(["tfresnet", "models", "--names=resnet20,resnet18"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | 20 | A | 269,722 |" in out and "| resnet18 | 18 | B | 11,689,512 |" in out
    # Spec strings, whose commas --names would split, come as arguments.
    assert cli.main(["tfresnet", "models", "--names=plain8", "cifar:stage_blocks=1,1,1\n"]) == 0
    out = capsys.readouterr().out
    assert "| plain8 | 8 | none | 75,290 |" in out
    assert "| cifar:stage_blocks=1,1,1 | 8 | A | 75,290 |" in out
    assert cli.main(["tfresnet", "models", "cifar:stage_blocks=1,x"]) == 2
    assert "stage_blocks='1,x' in model spec" in capsys.readouterr().err


def test_command_help_lists_flags(capsys):
    assert cli.main(["tfresnet", "train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--shortcut" in out and "--strategy" in out


NATIVE_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|"
    r"To enable the following instructions|\[\[\{\{node ",
    re.M,
)


@pytest.mark.slow  # three console-script processes start TensorFlow
def test_train_then_evaluate_from_the_console_script(tmp_path):
    """Quiet by default: no TensorFlow C++ lines, and one line per epoch when piped."""
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "tfresnet.cli",
        "train",
        "--model=cifar_resnet8",
        "--epochs=2",
        "--batch_size=64",
        "--export=false",
        f"--run_dir={run_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in native_logs.ENVIRONMENT}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cifar_resnet8 on digits: test error" in done.stdout
    assert not NATIVE_LOG_LINE.search(done.stdout + done.stderr), done.stderr[-2000:]
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout  # no progress bar
    epoch_lines = re.findall(r"^\d+/\d+ - .*loss: ", done.stdout, re.M)
    assert len(epoch_lines) == 2, done.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schedule"]["epochs"] == 2
    evaluate = subprocess.run(
        [sys.executable, "-m", "tfresnet.cli", "evaluate", f"--model_path={run_dir}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    assert not NATIVE_LOG_LINE.search(evaluate.stderr), evaluate.stderr[-2000:]
    report = json.loads(evaluate.stdout[evaluate.stdout.index("{") :])
    assert report["top1_error"] == pytest.approx(results["final"]["test_error"], abs=1e-6)


# --- the boundary: flags and exit codes live in tfresnet/cli/ only ------------------------------


def _library_modules():
    package = os.path.join(ROOT, "tfresnet")
    for folder, dirs, names in os.walk(package):
        dirs[:] = [d for d in dirs if d not in ("cli", "__pycache__")]
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def _forbidden_imports(path):
    """`absl.flags` and `tfresnet.cli` imports of a file, importlib and __import__ included."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = getattr(func, "attr", getattr(func, "id", ""))
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names = [str(first.value)]
        found += [n for n in names if n.startswith(("absl.flags", "tfresnet.cli"))]
    return found


def test_no_library_module_imports_absl_flags_or_the_cli():
    offenders = {
        os.path.relpath(path, ROOT): found
        for path in _library_modules()
        if (found := _forbidden_imports(path))
    }
    assert not offenders, f"flags and the CLI belong in tfresnet/cli/: {offenders}"


def test_the_library_imports_without_the_cli_and_the_cli_without_tensorflow(tmp_path):
    """In one fresh interpreter (TensorFlow's import is most of its time), from a copy of
    tfresnet/ alone, as `pip install .` installs it (setup.py's packages): `import keras,
    tfresnet` registers the custom layers; the library loads no CLI module, and every module,
    the CLI's included, imports without benchmarks/ and loads none of it; the instruments once
    in the package (the benches, the phase clock) are gone."""
    shutil.copytree(
        ROOT / "tfresnet", tmp_path / "tfresnet", ignore=shutil.ignore_patterns("__pycache__")
    )
    modules = sorted(
        os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        for path in _library_modules()
    )
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import keras, tfresnet\n"  # docs/models.md: .keras files load after `import tfresnet`
        "names = ('BatchNormalization', 'ZeroPadShortcut')\n"
        "registered = [n for n in names if keras.saving.get_registered_object('tfresnet>' + n)]\n"
        "import tfresnet.tuning\n"
        "assert not [m for m in sys.modules if m.startswith('tfresnet.cli')], 'tuning'\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "cli = sorted(m for m in sys.modules if m.startswith('tfresnet.cli'))\n"
        "names = [m.name for m in pkgutil.walk_packages(tfresnet.__path__, 'tfresnet.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'benchmarks')\n"
        "print(json.dumps({'file': tfresnet.__file__, 'cli': cli, 'modules': names,\n"
        "                  'benchmarks': loaded, 'registered': registered}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["registered"] == ["BatchNormalization", "ZeroPadShortcut"]
    assert found["cli"] == []
    assert found["file"] == str(tmp_path / "tfresnet" / "__init__.py")
    assert "tfresnet.train" in found["modules"] and "tfresnet.cli.train" in found["modules"]
    assert found["benchmarks"] == []
    instruments = {"tfresnet.bench", "tfresnet.backend_bench", "tfresnet.clock"}
    instruments |= {"tfresnet.cli.bench", "tfresnet.cli.backend_bench"}
    assert not instruments & set(found["modules"])
    # The command sets the log environment before TensorFlow loads, so it must not load it
    # first: `tfresnet` alone (the usage) imports neither TensorFlow nor Keras.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tfresnet.cli"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert done.returncode == 2 and "tfresnet.cli" in imported, done.stderr[-2000:]
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_runs_and_lists_its_flags_under_help(capsys, command):
    assert cli.main(["tfresnet", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"tfresnet {command} flags:\n") and "verbose_logs" in out
    assert out.count("\n  --") > 2  # its own flags, besides --traceback and --verbose_logs


# --- output: quiet native logs, Keras progress by terminal ------------------------------------

NATIVE_SAMPLE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795898698.305366   27165 port.cc:153] oneDNN custom operations are on.\n",
    "I0000 00:00:1795898698.362597   27165 cpu_feature_guard.cc:227] This TensorFlow binary\n",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow\n",
    "E0000 00:00:1795898707.368676   27165 cuda_platform.cc:52] failed call to cuInit\n",
    "/x/y.py:3: UserWarning: a Python warning\n",
    "W0000 00:00:1795898853.337447   29030 local_rendezvous.cc:404] Local rendezvous is "
    "aborting with status: OUT_OF_RANGE: End of sequence\n",
    "\t [[{{node MultiDeviceIteratorGetNextFromShard}}]]\n",
    "Traceback (most recent call last):\n",
    "F0000 00:00:1795898853.337447   29030 op.cc:1] Check failed: x\n",
    "\t a tab after a fatal line stays\n",
]


def test_native_log_lines_below_the_level_are_dropped_with_their_continuations():
    kept = list(native_logs.filter_lines(NATIVE_SAMPLE, 3))
    assert kept == [NATIVE_SAMPLE[i] for i in (5, 8, 9, 10)]
    assert not NATIVE_LOG_LINE.search("".join(kept[:2]))
    warnings_too = list(native_logs.filter_lines([s.encode() for s in NATIVE_SAMPLE], 1))
    assert len(warnings_too) == len(NATIVE_SAMPLE) - 3  # only the three INFO lines go
    assert list(native_logs.filter_lines(NATIVE_SAMPLE, 0)) == NATIVE_SAMPLE


def test_stderr_filter_passes_everything_but_native_log_lines(capfd):
    with native_logs.filtered_stderr(3):
        for line in NATIVE_SAMPLE:
            os.write(2, line.encode())
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err == "".join(NATIVE_SAMPLE[i] for i in (5, 8, 9, 10)) + "after\n"


def test_sigterm_backs_up_inside_a_training_loop_and_stops_anywhere_else(monkeypatch):
    import signal

    from tfresnet import preemption

    handlers = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.update({signum: handler})
    )
    monkeypatch.setattr(signal, "getsignal", lambda signum: handlers.get(signum))

    def fresh_handler():  # as a new command installs it
        cli._stop_on_sigterm()
        return handlers[signal.SIGTERM]

    handler = fresh_handler()
    with pytest.raises(cli.Terminated):  # loading, evaluating, a model build, a bench
        handler(signal.SIGTERM, None)
    assert not handler.stop.requested.is_set()
    handler(signal.SIGTERM, None)  # the command is already ending: nothing more happens
    handler = fresh_handler()
    stop = preemption.installed()  # what training takes: the installed handler's request
    assert stop is handler.stop
    stop.in_training.set()
    handler(signal.SIGTERM, None)  # in the loop: backed up at the end of the current call
    assert stop.requested.is_set()
    with pytest.raises(cli.Terminated):  # a second SIGTERM does not wait
        handler(signal.SIGTERM, None)
    handler(signal.SIGTERM, None)  # a third changes nothing
    status, message = cli.classify_error(cli.Terminated())
    assert status == cli.EXIT_PREEMPTED and message.startswith("SIGTERM: stopped;")


def test_a_native_message_read_in_one_piece_is_dropped_whole_and_python_lines_stay():
    """An abort logged by TensorFlow's collectives when a peer is lost: its continuation lines
    come in the same write; a Python line read with it (a reader that fell behind) stays."""
    aborted = [
        "E0000 00:00:1796653568.943070   32031 base_collective_executor.cc:252] "
        "BaseCollectiveExecutor::StartAbort UNAVAILABLE: The following tasks are unhealthy:\n",
        "/job:worker/replica:0/task:1\n",
        "The tasks have crashed. [type.googleapis.com/tensorflow.CoordinationServiceError='']\n",
    ]
    python = ["error: lost contact with worker 1 (...).\n", "/x/y.py:3: UserWarning: w\n"]
    reads = [aborted, [*aborted, *python], ["a line of its own\n"]]
    kept = list(native_logs.filter_writes(reads, 3))
    assert kept == [*python, "a line of its own\n"]
    # The leader gone, in reads of their own: the known shapes of a status's lines go too.
    leader_gone = [
        "E0000 00:00:1796655664.113250    2552 base_collective_executor.cc:252] "
        "BaseCollectiveExecutor::StartAbort UNAVAILABLE: Failed to send RPC to coordination "
        "service.\n",
        "Additional GRPC error information from remote target /job:worker/replica:0/task:0 "
        "while calling /tensorflow.CoordinationService/Heartbeat:\n",
        ':UNKNOWN:Error received from peer  {grpc_message:"failed to connect", grpc_status:14}\n',
        "Resuming from epoch 3, the last backup that loads.\n",
    ]
    assert list(native_logs.filter_lines([*aborted, *leader_gone], 3)) == leader_gone[-1:]


@pytest.mark.slow  # default-suite time; CI's slow step runs it
def test_backend_bench_module_hides_native_lines_too():
    env = {k: v for k, v in os.environ.items() if k not in native_logs.ENVIRONMENT}
    command = [sys.executable, "-m", "benchmarks.backend_bench", "--model=resnet_7"]
    root = Path(__file__).resolve().parent.parent  # run from the clone's root, as documented
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=root)
    assert done.returncode == 2
    assert done.stderr.startswith("error: Unknown model name 'resnet_7'")
    assert done.stderr.count("\n") == 1, done.stderr  # the error alone: no TensorFlow lines


def test_log_environment_defaults_keep_what_the_user_set():
    env = {}
    assert native_logs.configure(["tfresnet", "train"], env) == 3
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}
    env = {"TF_CPP_MIN_LOG_LEVEL": "1"}
    assert native_logs.configure(["tfresnet", "train", "--epochs=1"], env) == 1
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "1"
    env = {}
    assert native_logs.configure(["tfresnet", "models", "--verbose_logs"], env) is None
    assert env == {}
    assert native_logs.configure(["tfresnet", "models", "--verbose_logs=maybe"], {}) == 3
    assert cli.main(["tfresnet", "models", "--verbose_logs=maybe"]) == 2  # reported there


def test_verbose_auto_is_the_bar_on_a_terminal_and_one_line_per_epoch_elsewhere():
    class Stream:
        def __init__(self, tty):
            self.isatty = lambda: tty

    assert train_lib.keras_verbose("auto", Stream(True)) == 1
    assert train_lib.keras_verbose("auto", Stream(False)) == 2
    assert train_lib.keras_verbose("0", Stream(True)) == 0
