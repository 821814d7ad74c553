"""One process trains in a run directory at a time; the others are refused, nothing written.

"Another process" is a real one: a child that holds the directory's flock until its stdin closes.
"""

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys

import pytest

from tfresnet import files, rundir, runlock
from tfresnet import train as train_lib
from tfresnet.train import TrainConfig

HOLDER = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2] == 'shared' else fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)
TRY_LOCK = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "try:\n"
    "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "except BlockingIOError:\n"
    "    sys.exit(1)\n"
)


@contextlib.contextmanager
def held_by_another_process(path, shared=False):
    """The flock on `path` held by a child process for the block (as a training process would)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "shared" if shared else "exclusive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def another_process_can_lock(path) -> bool:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)]).returncode == 0


def test_a_directory_another_process_holds_is_refused_until_it_ends(tmp_path):
    with held_by_another_process(tmp_path):
        with pytest.raises(runlock.RunDirInUse, match=r"is in use: another process is training"):
            runlock.ensure_free(str(tmp_path))
        with pytest.raises(runlock.RunDirInUse, match=r"Run the same command again once"):
            with runlock.exclusive(str(tmp_path)):
                pass
    runlock.ensure_free(str(tmp_path))
    with runlock.exclusive(str(tmp_path)):
        assert not another_process_can_lock(tmp_path)
    assert another_process_can_lock(tmp_path)  # released, and no lock file left
    assert os.listdir(tmp_path) == []


def test_a_hold_passed_along_is_reused_and_outlives_the_inner_block(tmp_path):
    with runlock.exclusive(str(tmp_path)) as hold:
        same = str(tmp_path / ".." / tmp_path.name)  # the same directory
        with runlock.exclusive(same, held=hold) as inner:
            runlock.ensure_free(str(tmp_path), held=inner)
        assert not another_process_can_lock(tmp_path)  # the inner block did not release it
        with pytest.raises(runlock.RunDirInUse):  # without the hold: no state in the module
            with runlock.exclusive(same):
                pass
    assert another_process_can_lock(tmp_path)


def test_checks_do_not_refuse_each_other_but_a_check_does_refuse_training(tmp_path):
    with held_by_another_process(tmp_path, shared=True):  # another command's check
        runlock.ensure_free(str(tmp_path))
        with pytest.raises(runlock.RunDirInUse):  # it lasts longer than the retry here
            with runlock.exclusive(str(tmp_path)):
                pass


def test_clearing_a_run_keeps_the_directory_and_its_lock(tmp_path):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "state.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    inode = os.stat(tmp_path).st_ino
    with runlock.exclusive(str(tmp_path)):
        rundir.clear(str(tmp_path), hint="")
        assert os.listdir(tmp_path) == [] and os.stat(tmp_path).st_ino == inode
        assert not another_process_can_lock(tmp_path)  # still held: the same directory


def test_object_stores_go_unlocked_silently(caplog):
    """gs:// has no locks (TF's ram:// stands in): nothing is opened, written or warned about."""
    run = "ram://runlock/run"
    files.makedirs(run)
    with caplog.at_level(logging.WARNING), runlock.exclusive(run):
        runlock.ensure_free(run)
    assert files.listdir(run) == [] and caplog.records == []


@pytest.mark.slow  # a training; test_cli_errors' busy-directory case stays
def test_train_refuses_a_run_directory_in_training_and_writes_nothing(tmp_path):
    config = TrainConfig(
        model="cifar_resnet8", dataset="digits", epochs=1, batch_size=128, export=False,
        run_dir=str(tmp_path / "run"), verbose=0,
    )  # fmt: skip
    os.makedirs(config.run_dir)
    with held_by_another_process(config.run_dir):
        with pytest.raises(runlock.RunDirInUse):
            train_lib.train(config)
        assert os.listdir(config.run_dir) == []  # nothing written, not even config.json
        files.write_json(os.path.join(config.run_dir, "config.json"), dataclasses.asdict(config))
        with pytest.raises(runlock.RunDirInUse):
            train_lib.train(dataclasses.replace(config, overwrite=True))
        assert os.listdir(config.run_dir) == ["config.json"]  # --overwrite deleted nothing
    results = train_lib.train(dataclasses.replace(config, overwrite=True))  # it has ended
    assert len(results["curves"]["train_error"]) == 1
    assert another_process_can_lock(config.run_dir)


def test_serialized_makes_another_process_wait_and_leaves_no_file(tmp_path):
    """export's models.config update: processes take turns (the old lock file,
    `.models.config.lock`, stayed behind in every export folder)."""
    import threading

    with runlock.serialized(str(tmp_path)):
        assert not another_process_can_lock(tmp_path)
    assert another_process_can_lock(tmp_path)
    assert os.listdir(tmp_path) == []
    entered = threading.Event()

    def enter():
        with runlock.serialized(str(tmp_path)):
            entered.set()

    with held_by_another_process(tmp_path):
        waiter = threading.Thread(target=enter)
        waiter.start()
        assert not entered.wait(timeout=1.0)  # its turn has not come
    waiter.join(timeout=30)
    assert entered.is_set()
