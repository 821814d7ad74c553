import ast
import json
import os
import subprocess
import sys

import pytest

from tfresnet import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_usage_and_unknown_command(capsys):
    assert cli.main(["tfresnet"]) == 2
    assert "tfresnet train" in capsys.readouterr().out
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


def test_command_help_lists_flags(capsys):
    assert cli.main(["tfresnet", "train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--shortcut" in out and "--strategy" in out


def test_train_then_evaluate_from_the_console_script(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "tfresnet.cli",
        "train",
        "--model=cifar_resnet8",
        "--epochs=1",
        "--batch_size=64",
        "--export=false",
        f"--run_dir={run_dir}",
        "--verbose=0",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cifar_resnet8 on digits: test error" in done.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["schedule"]["epochs"] == 1
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1 and "holds a finished run" in again.stderr
    evaluate = subprocess.run(
        [sys.executable, "-m", "tfresnet.cli", "evaluate", f"--model_path={run_dir}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
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


def test_the_library_imports_without_the_cli():
    modules = sorted(
        os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        for path in _library_modules()
    )
    code = (
        "import importlib, sys\n"
        "import tfresnet.tuning\n"
        "assert not [m for m in sys.modules if m.startswith('tfresnet.cli')], 'tuning'\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('tfresnet.cli')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_every_command_is_a_module_with_flags_and_a_runner():
    modules = cli.command_modules()
    assert tuple(modules) == cli.COMMANDS
    for name, module in modules.items():
        assert module.__name__ == f"tfresnet.cli.{name}"
        assert callable(module.define_flags) and callable(module.run)
