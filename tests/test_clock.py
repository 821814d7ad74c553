import subprocess
import sys
import time

import pytest

from tfresnet import clock as clock_lib
from tfresnet.clock import PhaseClock


def test_process_age_counts_from_process_start():
    # A child that sleeps 0.5 s before asking is at least that old; this process is older still.
    # The child loads clock.py alone: importing tfresnet (TensorFlow) would take seconds.
    code = (
        "import importlib.util, sys, time; time.sleep(0.5); "
        "spec = importlib.util.spec_from_file_location('clock', sys.argv[1]); "
        "clock = importlib.util.module_from_spec(spec); spec.loader.exec_module(clock); "
        "print(clock.process_age())"
    )
    child = float(
        subprocess.check_output([sys.executable, "-c", code, clock_lib.__file__], text=True)
    )
    assert 0.5 <= child < 30
    assert clock_lib.process_age() > child - 0.5


def test_marks_charge_the_time_since_the_last_mark(monkeypatch):
    ticks = iter([100.0, 102.5, 110.0, 111.0])
    monkeypatch.setattr(clock_lib.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(clock_lib, "process_age", lambda: 4.0)
    clock = PhaseClock()
    clock.mark("data_s")  # 2.5 s
    clock.mark("train_s")  # 7.5 s
    clock.move("train_s", "eval_s", 1.5)
    clock.mark("data_s")  # 1 s more
    assert clock.summary() == {
        "startup_s": 4.0,
        "data_s": 3.5,
        "train_s": 6.0,
        "eval_s": 1.5,
        "total_s": 15.0,
    }
    assert list(clock.phases) == ["startup_s", "data_s", "train_s", "eval_s"]


def test_a_move_never_takes_more_than_the_phase_holds():
    clock = PhaseClock(count_startup=False)
    clock.add("train_s", 2.0)
    clock.move("train_s", "eval_s", 5.0)
    assert clock.phases == {"train_s": 0.0, "eval_s": 2.0}


def test_a_clock_made_later_counts_the_time_before_it_as_startup():
    time.sleep(0.01)
    assert PhaseClock().phases["startup_s"] == pytest.approx(clock_lib.process_age(), abs=1.0)
