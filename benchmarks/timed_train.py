"""`tfresnet train`, timed phase by phase: the same flags, the same `tfresnet.train.train`, plus
a Keras callback that marks where the process's wall time goes.

    python -m benchmarks.timed_train --dataset=fashion_mnist --model=resnet20 --epochs=2 \\
        --run_dir=/tmp/run --overwrite

The run directory is the one `tfresnet train` writes (results.json included). At the end it
prints one JSON line, {"phases": {...}}: seconds of start-up (interpreter, imports, flags),
set-up (data, model, compile, restore: from `train()` to `model.fit`'s first step), the first
training call (tracing, and its steps_per_execution steps), steady training, evaluation after
each epoch (validation, the test curve, TensorBoard's epoch summary), the epoch-end writes
(checkpoints, backup, history), the evaluation pass over the training set, the final test
evaluation (where the last epoch's test curve did not measure it), the finish (model.keras, the
SavedModel, results.json) and their total. benchmarks/end_to_end.py and train_ab.py read it.
"""

import json
import sys

import keras

import benchmarks
from benchmarks.phases import PhaseClock
from tfresnet import cli
from tfresnet import train as train_lib

# Every command's module, as `tfresnet train` loads them: its start-up is what is measured.
train_cli = cli.command_modules()["train"]


class PhaseTimer(keras.callbacks.Callback):
    """Charges `model.fit`'s time to phases on `clock` (a `PhaseClock`) at Keras' hooks, then
    that of the evaluations `train` runs after it.

    tfresnet puts the callbacks it is given after its own epoch-end work but the commit, so an
    epoch ends here once the test curve is evaluated, and the commit comes before the next
    epoch begins (or training ends). After training, `train` evaluates the training set, then
    the test set where the last epoch's test curve did not (`train`'s docstring says so).
    """

    FINAL_EVALUATIONS = ("train_eval_s", "final_eval_s")  # in the order `train` runs them

    def __init__(self, clock: PhaseClock):
        super().__init__()
        self.clock = clock
        self._first = True
        self._in_fit = False
        self._finals = 0  # evaluations seen outside fit

    def on_train_begin(self, logs=None):
        self.clock.mark("setup_s")
        self._first, self._in_fit = True, True  # each fit call traces its step again

    def on_epoch_begin(self, epoch, logs=None):
        self.clock.mark("bookkeeping_s")

    def on_train_batch_end(self, batch, logs=None):
        self.clock.mark("first_step_s" if self._first else "train_s")
        self._first = False

    def on_test_begin(self, logs=None):
        if self._in_fit:
            self.clock.mark("train_s")
        elif not self._finals and "setup_s" not in self.clock.phases:
            self.clock.mark("setup_s")  # a finish resumed after training: fit never ran

    def on_test_end(self, logs=None):
        if self._in_fit:
            self.clock.mark("eval_s")
            return
        names = self.FINAL_EVALUATIONS
        self.clock.mark(names[min(self._finals, len(names) - 1)])
        self._finals += 1

    def on_epoch_end(self, epoch, logs=None):
        self.clock.mark("eval_s")

    def on_train_end(self, logs=None):
        self.clock.mark("bookkeeping_s")
        self._in_fit = False


def timed_train(config: train_lib.TrainConfig, clock: PhaseClock) -> dict:
    """`train(config)` with its phases marked on `clock`; returns the results dict."""
    results = train_lib.train(config, callbacks=[PhaseTimer(clock)])
    clock.mark("finish_s")
    return results


def body(fv):
    config = train_cli.config_from_flags(fv)
    clock = PhaseClock()  # its start-up: the process's age now, as `tfresnet train` at this point
    timed_train(config, clock)
    print(json.dumps({"phases": clock.summary()}), flush=True)


def main(argv=None) -> int:
    """`python -m benchmarks.timed_train [tfresnet train flags]`; returns the exit status."""
    return benchmarks.run("timed_train", train_cli.define_flags, body, argv)


if __name__ == "__main__":
    sys.exit(main())
