"""benchmarks/phases.py's clock and benchmarks/timed_train.py's callback that marks a training."""

import subprocess
import sys
import time

import pytest
from test_train import _config

from benchmarks import phases, timed_train
from benchmarks.phases import PhaseClock


def test_process_age_counts_from_process_start():
    # A child that sleeps 0.5 s before asking is at least that old; this process is older still.
    # The child loads phases.py alone: the standard library, quick to start.
    code = (
        "import importlib.util, sys, time; time.sleep(0.5); "
        "spec = importlib.util.spec_from_file_location('phases', sys.argv[1]); "
        "phases = importlib.util.module_from_spec(spec); spec.loader.exec_module(phases); "
        "print(phases.process_age())"
    )
    child = float(subprocess.check_output([sys.executable, "-c", code, phases.__file__], text=True))
    assert 0.5 <= child < 30
    assert phases.process_age() > child - 0.5


def test_marks_charge_the_time_since_the_last_mark(monkeypatch):
    ticks = iter([100.0, 102.5, 110.0, 111.0])
    monkeypatch.setattr(phases.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(phases, "process_age", lambda: 4.0)
    clock = PhaseClock()
    clock.mark("data_s")  # 2.5 s
    clock.mark("train_s")  # 7.5 s
    clock.mark("data_s")  # 1 s more
    assert clock.summary() == {"startup_s": 4.0, "data_s": 3.5, "train_s": 7.5, "total_s": 15.0}
    assert list(clock.phases) == ["startup_s", "data_s", "train_s"]


def test_a_clock_made_later_counts_the_time_before_it_as_startup():
    time.sleep(0.01)
    assert PhaseClock().phases["startup_s"] == pytest.approx(phases.process_age(), abs=1.0)


def test_the_timer_splits_fit_into_first_step_training_evaluation_and_writes(monkeypatch):
    # fit begins at 1 s; epoch 1: first call ends at 4, the next at 10, validation 10.5-11.5,
    # the test curve until 13.5, the commit until 14; epoch 2: training to 18, the test curve
    # to 20, the commit to 21; then train() evaluates the training set to 23 and the test set
    # to 24; the finish (save, results.json) to 26.
    ticks = iter([0.0, 1.0, 1.0, 4.0, 10.0, 10.5, 11.5, 13.5, 14.0, 18.0, 20.0, 21.0, 23.0, 24.0])
    monkeypatch.setattr(phases.time, "perf_counter", lambda: next(ticks, 26.0))
    clock = PhaseClock(count_startup=False)
    timer = timed_train.PhaseTimer(clock)
    timer.on_train_begin()
    timer.on_epoch_begin(0)
    timer.on_train_batch_end(7)
    timer.on_train_batch_end(15)
    timer.on_test_begin()
    timer.on_test_end()
    timer.on_epoch_end(0)
    timer.on_epoch_begin(1)
    timer.on_train_batch_end(15)
    timer.on_epoch_end(1)
    timer.on_train_end()
    for _ in range(2):  # the training set's pass, then the final test evaluation
        timer.on_test_begin()
        timer.on_test_end()
    clock.mark("finish_s")
    assert clock.summary() == {
        "setup_s": 1.0,
        "bookkeeping_s": 1.5,
        "first_step_s": 3.0,
        "train_s": 10.5,
        "eval_s": 5.0,
        "train_eval_s": 2.0,
        "final_eval_s": 1.0,
        "finish_s": 2.0,
        "total_s": 26.0,
    }
    # A finish resumed after training (a kill while saving): no fit, set-up until the pass.
    ticks = iter([0.0, 3.0, 5.0])
    clock = PhaseClock(count_startup=False)
    timer = timed_train.PhaseTimer(clock)
    timer.on_test_begin()
    timer.on_test_end()
    assert clock.summary() == {"setup_s": 3.0, "train_eval_s": 2.0, "total_s": 5.0}


@pytest.mark.slow  # a timed training; the clock's unit tests stay
def test_a_timed_training_reports_every_phase(tmp_path):
    clock = PhaseClock(count_startup=False)
    results = timed_train.timed_train(_config(tmp_path), clock)
    assert results["final"]["test_error"] is not None  # the library's own results
    timings = clock.summary()  # where the time went, in the order it went there
    # No final_eval_s: the last epoch's test-curve point is the final test error.
    assert list(timings) == [
        "setup_s", "bookkeeping_s", "first_step_s", "train_s", "eval_s", "train_eval_s",
        "finish_s", "total_s",
    ]  # fmt: skip
    assert all(v >= 0 for v in timings.values()) and timings["first_step_s"] > 0
    # The test curve (2 epochs) and validation are evaluation, not training or bookkeeping.
    assert timings["eval_s"] > 0 and timings["train_s"] > 0 and timings["train_eval_s"] > 0
    assert timings["total_s"] == pytest.approx(sum(timings.values()) - timings["total_s"], abs=0.01)


def test_a_bad_flag_of_the_timed_training_is_one_line(capsys):
    assert timed_train.main(["--model=resnet_7", "--epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "resnet_7" in err and err.count("\n") == 1, err
