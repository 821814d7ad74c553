"""How long each training epoch takes: `EpochTimer`, the Keras callback behind results.json's
training images/s (`callbacks.EpochRecorder` records each epoch's seconds) and the benchmarks'
rates. Plain Keras: it runs on every backend.
"""

import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Each epoch's training time, validation excluded: wall seconds (`seconds`) and this
    process's CPU seconds, all threads (`cpu_seconds`). Put it first among the callbacks, so its
    epoch ends before the others' epoch-end work (the test curve, the commit) begins."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._start = self._eval = self._test_start = (0.0, 0.0)

    @staticmethod
    def _now():
        return time.perf_counter(), time.process_time()

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._eval = self._now(), (0.0, 0.0)

    def on_test_begin(self, logs=None):
        self._test_start = self._now()

    def on_test_end(self, logs=None):
        now = self._now()
        self._eval = tuple(
            e + n - s for e, n, s in zip(self._eval, now, self._test_start, strict=True)
        )

    def on_epoch_end(self, epoch, logs=None):
        now = self._now()
        wall, cpu = (n - s - e for n, s, e in zip(now, self._start, self._eval, strict=True))
        self.seconds.append(wall)
        self.cpu_seconds.append(cpu)
