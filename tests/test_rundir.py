"""Crash safety: kill a run at chosen instants, run the same command again, get one whole run.

The kills are KeyboardInterrupts raised from inside the library's own writes (monkeypatched),
so each lands exactly where a SIGKILL or Ctrl-C could: mid-write, between two records of an
epoch, between training and results, during the export.
"""

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from tfresnet import callbacks, files, machine, models, preemption, rundir, timing
from tfresnet import train as train_lib
from tfresnet.train import TrainConfig, TrainingError

EPOCHS = 3


def _config(tmp_path, **kwargs):
    values = dict(
        model="cifar_resnet8",
        dataset="digits",
        epochs=EPOCHS,
        batch_size=128,
        export=False,
        run_dir=str(tmp_path / "run"),
        verbose=0,
        eval_test_each_epoch=True,
    )
    values.update(kwargs)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: what every interrupted one must end up equal to."""
    results = train_lib.train(_config(tmp_path_factory.mktemp("ref")))
    keras.backend.clear_session()
    return results


def _kill_when(monkeypatch, module, name, should_kill):
    """Make `module.name(...)` raise KeyboardInterrupt the first time `should_kill(*args)`."""
    real = getattr(module, name)
    fired = []

    def wrapper(*args, **kwargs):
        if not fired and should_kill(*args, **kwargs):
            fired.append(args)
            raise KeyboardInterrupt(f"simulated kill in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return fired


def _kill_at_history_of_epoch(monkeypatch, epoch):
    """Kill the run just before history.csv gets its row for `epoch` (1-based)."""
    return _kill_when(
        monkeypatch,
        files,
        "write_text",
        lambda path, text: path.endswith("history.csv") and text.count("\n") == epoch + 1,
    )


def _epochs_in_history(run):
    with open(run / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _assert_whole_run(run, results, reference, exports=0):
    assert _epochs_in_history(run) == list(range(EPOCHS))
    saved = json.loads((run / "results.json").read_text())
    assert saved["curves"]["epoch"] == list(range(1, EPOCHS + 1))
    assert len(saved["curves"]["test_error"]) == EPOCHS
    assert not (run / "backup").exists()
    leftovers = [p for p in run.rglob("*") if files.TEMP_MARK in p.name]
    assert leftovers == []
    if exports:
        assert sorted(os.listdir(run / "export" / "cifar_resnet8")) == ["1"]
    # Resuming replays exactly what the uninterrupted run computed, up to float noise.
    assert results["final"]["test_error"] == pytest.approx(
        reference["final"]["test_error"], abs=2 / 359
    )
    np.testing.assert_allclose(
        saved["curves"]["train_loss"], reference["curves"]["train_loss"], rtol=1e-3
    )


@pytest.mark.slow  # three trainings; the other kill tests here stay
def test_kill_between_backup_and_history_redoes_that_epoch(tmp_path, monkeypatch, reference):
    config = _config(tmp_path)
    fired = _kill_at_history_of_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    assert fired
    state = rundir.load_state(config.run_dir)
    assert state.epoch == 1  # epoch 2's weights were written, but never committed
    monkeypatch.undo()
    keras.backend.clear_session()
    results = train_lib.train(config)
    _assert_whole_run(tmp_path / "run", results, reference)
    assert [s["first_epoch"] for s in results["segments"]] == [1, 2]
    assert {s["hardware"] for s in results["segments"]} == {machine.cpu_info().describe()}
    assert results["wall_time_s"] == pytest.approx(sum(s["wall_s"] for s in results["segments"]))


@pytest.mark.slow  # two trainings
def test_corrupt_backup_falls_back_to_the_one_before(tmp_path, monkeypatch, reference, caplog):
    config = _config(tmp_path)
    _kill_at_history_of_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    monkeypatch.undo()
    state = rundir.load_state(config.run_dir)
    assert state.epoch == 2 and state.previous["epoch"] == 1
    # A disk fault truncates the newest backup: the run resumes from the one before it.
    path = tmp_path / "run" / "backup" / state.weights
    path.write_bytes(path.read_bytes()[:100])
    keras.backend.clear_session()
    with caplog.at_level("WARNING"):
        results = train_lib.train(config)
    assert "backup of epoch 2" in caplog.text and "Resuming from epoch 1" in caplog.text
    _assert_whole_run(tmp_path / "run", results, reference)


@pytest.mark.slow  # two trainings
def test_kill_after_training_finishes_without_training_again(tmp_path, monkeypatch, reference):
    from tfresnet import export

    config = _config(tmp_path, export=True)
    real_export = export.export_for_serving

    def export_then_die(model, base_dir, **kwargs):
        # Killed during the export: a half-written temporary folder is left behind.
        os.makedirs(os.path.join(base_dir, "cifar_resnet8", ".tmp-1-abc"), exist_ok=True)
        raise KeyboardInterrupt("simulated kill during the export")

    monkeypatch.setattr(export, "export_for_serving", export_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    assert rundir.load_state(config.run_dir).epoch == EPOCHS
    assert (tmp_path / "run" / "model.keras").is_file()
    monkeypatch.setattr(export, "export_for_serving", real_export)
    fits = _kill_when(monkeypatch, keras.Model, "fit", lambda *a, **k: True)
    keras.backend.clear_session()
    results = train_lib.train(config)  # would raise KeyboardInterrupt if it trained again
    assert not fits
    _assert_whole_run(tmp_path / "run", results, reference, exports=1)
    assert results["export"].endswith(os.path.join("cifar_resnet8", "1"))


@pytest.mark.slow  # two trainings and an export
def test_kill_before_results_json_keeps_the_finished_export(tmp_path, monkeypatch, reference):
    config = _config(tmp_path, export=True)
    _kill_when(monkeypatch, files, "write_json", lambda path, obj: path.endswith("results.json"))
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    assert (tmp_path / "run" / "export" / "cifar_resnet8" / "1").is_dir()
    monkeypatch.undo()
    keras.backend.clear_session()
    results = train_lib.train(config)
    _assert_whole_run(tmp_path / "run", results, reference, exports=1)


def test_kill_during_a_checkpoint_write_leaves_the_old_file(tmp_path, monkeypatch):
    config = _config(tmp_path, epochs=2)

    def dies_while_writing(path, write):
        if (
            path.endswith("last.keras")
            and (tmp_path / "run" / "checkpoints" / "last.keras").exists()
        ):
            write(files.temp_name(path))  # the half-written file is a temporary name...
            raise KeyboardInterrupt("simulated kill while writing last.keras")
        return real(path, write)

    real = files.write_atomically
    monkeypatch.setattr(files, "write_atomically", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    monkeypatch.undo()
    keras.saving.load_model(tmp_path / "run" / "checkpoints" / "last.keras")  # ...not this one
    keras.backend.clear_session()
    train_lib.train(config)
    assert _epochs_in_history(tmp_path / "run") == [0, 1]
    assert not [p for p in (tmp_path / "run").rglob("*") if files.TEMP_MARK in p.name]


class _PoisonEpoch(keras.callbacks.Callback):
    """Makes the loss NaN from the start of epoch `epoch` (0-based) on."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.get_layer("logits").kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_nan_keeps_the_last_good_checkpoint_and_backup(tmp_path):
    config = _config(tmp_path)
    train_lib.check_run_dir(config)
    os.makedirs(config.run_dir)
    files.write_json(os.path.join(config.run_dir, "config.json"), config.__dict__)
    with pytest.raises(TrainingError, match="diverged in epoch 2.*Epoch 1 was the last good one"):
        train_lib.fit_model(config, extra_callbacks=[_PoisonEpoch(1)])
    state = rundir.load_state(config.run_dir)
    assert state.epoch == 1 and _epochs_in_history(tmp_path / "run") == [0]
    last = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in last.weights)


def test_rejected_command_writes_nothing_and_the_corrected_one_writes_strict_json(tmp_path):
    with pytest.raises(ValueError, match="batch_size 5000 is larger"):
        train_lib.train(_config(tmp_path, batch_size=5000))
    assert not (tmp_path / "run" / "config.json").exists()
    results = train_lib.train(_config(tmp_path, epochs=1))  # the corrected command just runs
    text = json.dumps(results)  # what the file holds, as Python would write it again
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    raw = (tmp_path / "run" / "results.json").read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    assert json.loads(raw)["final"]["val_error"] is None  # no validation split: null


@pytest.mark.slow  # two trainings
def test_legacy_keras_backup_still_resumes(tmp_path):
    """A run killed under the old BackupAndRestore layout continues with this one."""
    config = _config(tmp_path, epochs=2)
    run = tmp_path / "run"
    train_lib.check_run_dir(config)
    os.makedirs(run)
    files.write_json(str(run / "config.json"), config.__dict__)
    train_lib.fit_model(_config(tmp_path, epochs=1, run_dir=str(tmp_path / "one")))
    model = keras.saving.load_model(tmp_path / "one" / "model.keras")
    (run / "backup").mkdir()
    model.save_weights(run / "backup" / rundir.LEGACY_WEIGHTS)
    (run / "backup" / rundir.LEGACY_METADATA).write_text('{"epoch": 1, "batch": 0}')
    (run / "history.csv").write_text((tmp_path / "one" / "history.csv").read_text())
    state = rundir.load_state(str(run))
    assert state.epoch == 1 and state.weights == rundir.LEGACY_WEIGHTS
    keras.backend.clear_session()
    results = train_lib.train(config)
    assert results["curves"]["epoch"] == [1, 2] and _epochs_in_history(run) == [0, 1]


def test_a_run_directory_says_whether_it_is_finished_or_can_be_resumed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backup").mkdir()  # a start killed before its first epoch was committed
    assert not rundir.resumable(str(run)) and not rundir.finished(str(run))
    (run / "backup" / rundir.STATE).write_text('{"epoch": 1, "weights": "epoch-1.weights.h5"')
    with pytest.raises(files.CorruptFile, match="state.json is not readable JSON"):
        rundir.resumable(str(run))  # half a file: neither resumed nor trained over
    (run / "backup" / rundir.STATE).write_text('{"epoch": 1, "weights": "epoch-1.weights.h5"}')
    assert rundir.resumable(str(run)) and not rundir.finished(str(run))
    (run / "backup" / rundir.STATE).unlink()
    (run / "backup" / rundir.LEGACY_METADATA).write_text('{"epoch": 1}')
    assert not rundir.resumable(str(run))  # its epoch has no row in history.csv
    (run / "history.csv").write_text("epoch,loss\n0,1.5\n")
    assert rundir.resumable(str(run))
    (run / rundir.RESULTS).write_text("{}")  # finished: a leftover backup is not resumed
    assert rundir.finished(str(run)) and not rundir.resumable(str(run))


@pytest.mark.slow  # default-suite time; CI's slow step runs it
def test_under_overwrite_a_worker_ignores_a_backup_the_chief_has_not_cleared_yet(
    tmp_path, monkeypatch
):
    config = _config(tmp_path)
    _kill_at_history_of_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    monkeypatch.undo()
    assert rundir.resumable(str(tmp_path / "run"))
    keras.backend.clear_session()
    # What a non-chief worker runs: fit_model, with no clear of its own before it.
    _, results = train_lib.fit_model(dataclasses.replace(config, overwrite=True))
    assert [s["first_epoch"] for s in results["segments"]] == [1]  # not resumed at epoch 2
    assert results["curves"]["epoch"] == list(range(1, EPOCHS + 1))


class _StopAt(keras.callbacks.Callback):
    """Requests a stop (as the CLI's SIGTERM handler does) at one global step: its `stop`."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.stop = preemption.StopRequest()

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            self.stop.requested.set()


def test_workers_agree_on_a_stop_about_every_second_at_steps_they_all_compute(
    tmp_path, monkeypatch
):
    """Two workers (simulated by the sum the all-reduce would give), 100 ms a step: they agree
    at step 1, then every 10 steps; the other worker is asked to stop from its 25th step, so
    this one, never asked, stops with it at the next agreement, step 31, backing up there."""
    import types

    clock, agreed, backed_up = [0.0], [], []
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])

    def two_workers(values):  # [asked, ms a step] here + the same from the other worker
        agreed.append(recorder._steps)
        return [values[0] + int(recorder._steps >= 25), 2 * values[1]]

    monkeypatch.setattr(callbacks.distribute, "summed_over_workers", lambda strategy: two_workers)
    stop = preemption.StopRequest()
    recorder = callbacks.EpochRecorder(
        str(tmp_path),
        rundir.RunState(),
        "accuracy",
        timing.EpochTimer(),
        steps_per_epoch=100,
        stop=stop,
    )
    recorder._model = types.SimpleNamespace(
        distribute_strategy=types.SimpleNamespace(num_replicas_in_sync=2)
    )
    monkeypatch.setattr(recorder, "commit_partial", lambda *done: backed_up.append(done))
    recorder.on_train_begin()
    recorder.on_epoch_begin(0)
    with pytest.raises(rundir.Preempted, match="in epoch 1 after 31 batches"):
        for batch in range(100):
            clock[0] += 0.1
            recorder.on_train_batch_end(batch)
    assert agreed == [1, 11, 21, 31] and backed_up == [(0, 31)]
    assert not stop.requested.is_set()  # this worker was never asked


@pytest.mark.slow  # default-suite time; CI's slow step runs it
def test_a_stop_request_backs_up_mid_epoch_and_resumes_there(tmp_path, reference):
    config = _config(tmp_path)
    train_lib.check_run_dir(config)
    os.makedirs(config.run_dir)
    files.write_json(os.path.join(config.run_dir, "config.json"), config.__dict__)
    stop_at = _StopAt(11 + 4)
    with pytest.raises(rundir.Preempted, match="epoch 2 after 4 batches"):
        train_lib.fit_model(config, extra_callbacks=[stop_at], stop=stop_at.stop)
    state = rundir.load_state(config.run_dir)
    assert (state.epoch, state.batch) == (1, 4) and state.previous["epoch"] == 1
    keras.backend.clear_session()
    results = train_lib.train(config)
    run = tmp_path / "run"
    assert _epochs_in_history(run) == [0, 1, 2] and not (run / "backup").exists()
    model = keras.saving.load_model(run / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == EPOCHS * 11  # no batch twice, none lost
    assert results["final"]["test_error"] == pytest.approx(
        reference["final"]["test_error"], abs=2 / 359
    )


def _stopped_run(config, step):
    """Start `config` and request a stop at global step `step`; the Preempted error."""
    train_lib.check_run_dir(config)
    os.makedirs(config.run_dir, exist_ok=True)
    files.write_json(os.path.join(config.run_dir, "config.json"), config.__dict__)
    stop_at = _StopAt(step)
    with pytest.raises(rundir.Preempted) as stopped:
        train_lib.fit_model(config, extra_callbacks=[stop_at], stop=stop_at.stop)
    keras.backend.clear_session()
    return stopped.value


def _finished_steps(tmp_path):
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    return int(model.optimizer.iterations.numpy())


@pytest.mark.slow  # two trainings
def test_a_stop_at_an_epochs_last_step_commits_that_epoch_whole(tmp_path):
    config = _config(tmp_path)
    stopped = _stopped_run(config, 11 + 11)  # the last step of epoch 2
    assert "epoch 2 after 11 batches" in str(stopped)
    state = rundir.load_state(config.run_dir)
    assert (state.epoch, state.batch) == (2, 0) and len(state.history) == 2
    train_lib.train(config)
    assert _epochs_in_history(tmp_path / "run") == [0, 1, 2]
    assert _finished_steps(tmp_path) == EPOCHS * 11


@pytest.mark.slow  # two trainings
def test_a_backup_made_under_another_steps_per_execution_resumes(tmp_path):
    # 22 steps per epoch: one step per call stops after 5 steps of epoch 2; the resumed run
    # would take 2 per call by default, which cannot finish the 17 left in whole calls.
    config = _config(tmp_path, batch_size=64, steps_per_execution=1)
    assert "epoch 2 after 5 batches" in str(_stopped_run(config, 22 + 5))
    train_lib.train(dataclasses.replace(config, steps_per_execution=None))
    assert _epochs_in_history(tmp_path / "run") == [0, 1, 2]
    assert _finished_steps(tmp_path) == EPOCHS * 22  # no batch twice, none lost


@pytest.mark.slow  # two trainings
def test_a_backup_that_holds_a_whole_epoch_trains_that_epoch_again(tmp_path):
    # Older versions stopped at an epoch's last step with a mid-epoch backup of all its
    # batches; that epoch has no history row, so it restarts from the epoch before.
    config = _config(tmp_path)
    _stopped_run(config, 11 + 4)
    path = os.path.join(rundir.backup_dir(config.run_dir), rundir.STATE)
    saved = json.loads(open(path).read())
    files.write_json(path, {**saved, "batch": 11})
    train_lib.train(config)
    assert _epochs_in_history(tmp_path / "run") == [0, 1, 2]
    assert _finished_steps(tmp_path) == EPOCHS * 11


@pytest.mark.slow
def test_sigterm_backs_up_exits_143_and_the_same_command_finishes(tmp_path):
    """The real signal through the real command (as a cluster manager sends it)."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    argv = [
        sys.executable, "-m", "tfresnet.cli", "train", "--model=cifar_resnet8", "--epochs=40",
        "--batch_size=32", "--noexport", "--verbose=0", f"--run_dir={run}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "backup" / rundir.STATE).exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "error: SIGTERM: stopped on request in epoch" in stderr
    state = rundir.load_state(str(run))
    # A signal during an epoch's last training call commits that epoch whole (batch 0, and at
    # least epoch 2, since the first backup already held epoch 1); any other call backs up
    # mid-epoch.
    assert state.batch > 0 and state.epoch >= 1 or state.batch == 0 and state.epoch >= 2
    finished = subprocess.run(argv, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert _epochs_in_history(run) == list(range(40))


def test_training_speed_leaves_out_evaluation_and_each_segments_first_epoch(monkeypatch):
    clock = iter([0.0, 9.0, 10.0, 12.0])  # epoch begins, validation 9-10 s, epoch ends at 12
    cpu = iter([0.0, 8.0, 9.5, 11.0])  # CPU seconds, all threads: validation took 1.5 of them
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(timing.time, "process_time", lambda: next(cpu))
    timer = timing.EpochTimer()
    timer.on_epoch_begin(0)
    timer.on_test_begin()
    timer.on_test_end()
    timer.on_epoch_end(0)
    assert (timer.seconds, timer.cpu_seconds) == ([11.0], [9.5])  # validation left out
    state = rundir.RunState(
        epoch=4,
        epoch_seconds=[30.0, 2.0, 25.0, 3.0],  # epochs 1 and 3 began a process (tracing)
        segments=[{"first_epoch": 1, "wall_s": 40}, {"first_epoch": 3, "wall_s": 35}],
    )
    assert rundir.train_images_per_second(state, 1000) == pytest.approx(2000 / 5.0)


def tree_of(folder) -> dict:
    """{relative path: bytes} of every file under `folder`: to show that nothing changed."""
    folder = str(folder)
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return out


def _touch(folder, *paths):
    for path in paths:
        os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
        with open(os.path.join(folder, path), "w") as f:
            f.write("x")


# Every name a run writes (`rundir.RUN_LAYOUT`), temporary files of killed writes included.
RUN_FILES = (
    "config.json", "results.json", "history.csv", "model.keras", ".tmp-0a1b2c3d-history.csv",
    "checkpoints/last.keras", "checkpoints/best.keras", "checkpoints/.tmp-0a1b2c3d-last.keras",
    "backup/state.json", "backup/epoch-3.weights.h5", "backup/epoch-3-batch-7.weights.h5",
    "backup/latest.weights.h5", "backup/training_metadata.json",
    "logs/train/events.out.tfevents.1700000000.host.1.0.v2",
    "logs/validation/events.out.tfevents.1700000000.host.1.1.v2",
    "logs/train/plugins/profile/2024_01_01/host.xplane.pb",
    "export/models.config", "export/.models.config.lock", "export/resnet20/1/saved_model.pb",
    "export/resnet20/1/variables/variables.index", "export/resnet20/.tmp-1-0a1b/saved_model.pb",
)  # fmt: skip


def test_overwrite_deletes_only_what_a_run_wrote(tmp_path):
    run = str(tmp_path / "run")
    _touch(run, *RUN_FILES)
    assert rundir.foreign_entries(run) == []
    inode = os.stat(run).st_ino
    rundir.clear(run, hint="h")
    assert os.listdir(run) == [] and os.stat(run).st_ino == inode  # the (locked) folder stays
    # A user's files, beside a run's or inside its folders, or a file where a run has a folder.
    theirs = (
        "thesis.tex", "checkpoints/notes.txt", "backup/state.json.bak", "logs/train/mine.txt",
        "export/resnet20/latest/saved_model.pb", "export/resnet20/2", "src/main.py",
    )  # fmt: skip
    _touch(run, *RUN_FILES, *theirs)
    before = tree_of(run)
    with pytest.raises(rundir.ForeignFiles) as refusal:
        rundir.clear(run, hint="use another --run_dir")
    assert str(refusal.value) == (
        f"{run!r} holds files that no tfresnet run wrote (backup/state.json.bak, "
        "checkpoints/notes.txt, export/resnet20/2, export/resnet20/latest/, logs/train/mine.txt "
        "and 2 more); use another --run_dir. Nothing was removed."
    )
    assert tree_of(run) == before
    assert rundir.foreign_entries(run) == [
        "backup/state.json.bak", "checkpoints/notes.txt", "export/resnet20/2",
        "export/resnet20/latest/", "logs/train/mine.txt", "src/", "thesis.tex",
    ]  # fmt: skip


def test_a_damaged_backup_record_is_refused_not_trained_over(tmp_path):
    """backup/state.json is written whole, so a damaged one was changed by something else:
    starting again from epoch 1 would silently throw the run away."""
    config = _config(tmp_path, epochs=2)
    run = tmp_path / "run"
    files.write_json(str(run / "config.json"), dataclasses.asdict(config))
    _touch(str(run), "backup/epoch-1.weights.h5", "history.csv")
    for damaged in ('{"epoch": 1, "weights": "epoch-1.weig', '["epoch", 1]', '{"epoch": "one"}'):
        (run / "backup" / rundir.STATE).write_text(damaged)
        before = tree_of(run)
        with pytest.raises(files.CorruptFile) as refusal:
            train_lib.train(config)
        message = str(refusal.value)
        assert message.startswith(str(run / "backup" / rundir.STATE)), message
        assert "restore it from a copy, or use --overwrite" in message
        assert tree_of(run) == before
    (run / "backup" / rundir.STATE).unlink()
    (run / "backup" / rundir.LEGACY_METADATA).write_text('{"epo')  # a Keras backup, cut short
    with pytest.raises(files.CorruptFile, match="training_metadata.json is not readable JSON"):
        rundir.load_state(str(run))
    # A record that reads, but no weights file of it loads: refused too, not trained over.
    model = models.build_model("cifar_resnet8", input_shape=(8, 8, 1), num_classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    state = rundir.RunState(epoch=1, weights="epoch-1.weights.h5")
    with pytest.raises(files.CorruptFile, match=r"No backup in .*backup loads \(epoch-1.weig"):
        rundir.restore(model, str(run), state)


@pytest.mark.parametrize("kind", ["run", "search"])
def test_a_saved_config_that_is_no_json_object_is_refused_saying_what_to_do(tmp_path, kind):
    from tfresnet import tuning
    from tfresnet.tune_config import TuneConfig

    name, flag, check, config = {
        "run": ("config.json", "--run_dir", train_lib.check_run_dir, _config(tmp_path)),
        "search": (
            "search.json",
            "--directory",
            tuning.check_search_dir,
            TuneConfig(directory=str(tmp_path / "search")),
        ),
    }[kind]
    saved = tmp_path / kind / name
    saved.parent.mkdir()
    saved.write_text('["a", "list"]')
    with pytest.raises(files.CorruptFile) as refusal:
        check(config)
    assert str(refusal.value) == (
        f"{saved} is not a {kind} config (a JSON object): restore it from a copy, or use "
        f"--overwrite to start the {kind} again, or another {flag}."
    )
