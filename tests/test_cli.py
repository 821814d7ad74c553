import json
import os
import subprocess
import sys

import pytest

from tfresnet import cli


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
