"""The Keras callbacks of a training run: `EpochRecorder` commits each epoch to the run
directory and honours stop requests; `TestErrorCurve` and `WeightDecayTerm` add to each epoch's
logs; `training_callbacks` puts them in the order they must run in.

`EpochRecorder` commits an epoch in this order: weights under a new name, the checkpoints,
history.csv, then `backup/state.json` (the one file that says which epoch is done), then the
older weights are deleted. A kill before `state.json` is replaced redoes that epoch; a kill after
it keeps it. (Keras' `BackupAndRestore`, `ModelCheckpoint` and `CSVLogger` write in place, each on
its own: history.csv could hold an epoch the backup does not.)
"""

import dataclasses
import math
import time
from collections.abc import Sequence

import keras

from tfresnet import distribute, files, machine, preemption, rundir
from tfresnet.results import weight_decay_loss
from tfresnet.rundir import Preempted, RunState, backup_dir
from tfresnet.timing import EpochTimer

# Under multi-worker training the workers agree on a stop request about this often (one small
# all-reduce each time): well inside a cluster's grace period, and too rare to slow training.
AGREE_EVERY_MS = 1000


class TestErrorCurve(keras.callbacks.Callback):
    """Adds `test_loss`/`test_accuracy` to each epoch's logs: the paper's test curves (Fig. 6),
    only for plotting (model selection uses the validation split, never this)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        results = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        if logs is not None:
            for key, value in results.items():
                logs[f"test_{key}"] = value


class WeightDecayTerm(keras.callbacks.Callback):
    """Adds `weight_decay_loss` to each epoch's logs: the decay term inside Keras' training loss,
    which tracks how large the kernels grew behind batch normalisation (and so how small their
    effective step is)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["weight_decay_loss"] = weight_decay_loss(self.model)


class EpochRecorder(keras.callbacks.Callback):
    """Commits each finished epoch to `out`, where this worker writes (the run directory on the
    chief); put it last. `monitor` picks `checkpoints/best.keras` (higher is better). A non-finite
    loss is never committed. Once `stop` is requested it backs up and raises `Preempted`."""

    def __init__(
        self,
        out: str,
        state: RunState,
        monitor: str,
        timer: EpochTimer,
        steps_per_epoch: int,
        stop: preemption.StopRequest | None = None,
    ):
        super().__init__()
        self.stop = stop or preemption.installed()  # the SIGTERM handler's
        self.out = out
        self.state = state
        self.monitor = monitor
        self.timer = timer
        self.steps_per_epoch = steps_per_epoch
        self._segment = {
            "first_epoch": state.epoch + 1,
            "wall_s": 0.0,
            "hardware": machine.cpu_info().describe(),
        }
        self._batch_offset = state.batch  # a resumed partial epoch starts at this batch

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        if not any(s is self._segment for s in self.state.segments):
            self.state.segments.append(self._segment)
        # A stop asked of any worker stops them all at the same step: each backs up (the
        # chief's copy is the one kept) and stops, instead of the others losing their peer.
        self._strategy = self.model.distribute_strategy
        self._sum = distribute.summed_over_workers(self._strategy)
        self._steps, self._next_agreement = 0, 1
        self._agreed = (time.perf_counter(), 0)  # when, and after how many steps
        self.stop.in_training.set()  # cleared by the caller of fit when it returns or raises

    def _stop_requested(self, epoch_end: bool = False) -> bool:
        """Whether to stop now. With several workers, whether any was asked to: they agree at
        every epoch end and every AGREE_EVERY_MS or so in between, at steps that they all
        compute alike from the sum of their step times (`distribute.summed_over_workers`)."""
        asked = self.stop.requested.is_set()
        if self._sum is None:
            return asked
        if not epoch_end and self._steps < self._next_agreement:
            return False
        now, (then, steps_then) = time.perf_counter(), self._agreed
        steps = self._steps - steps_then
        step_ms = min(60_000, round(1000 * (now - then) / steps)) if steps else 0
        stops, total_ms = self._sum([int(asked), step_ms])
        if not epoch_end:  # an epoch's end adds evaluation time: no step time from there
            replicas = self._strategy.num_replicas_in_sync
            steps_apart = AGREE_EVERY_MS * replicas // total_ms if total_ms else 1000
            self._next_agreement = self._steps + min(1000, max(1, steps_apart))
        self._agreed = (now, self._steps)
        return stops > 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        done = self._batch_offset + batch + 1
        # At the epoch's last step the stop waits for on_epoch_end, which commits it whole.
        if done < self.steps_per_epoch and self._stop_requested():
            self.commit_partial(self._epoch, done)
            raise Preempted(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        loss = logs.get("loss")
        if loss is None or not math.isfinite(float(loss)):
            raise FloatingPointError(f"loss {loss} in epoch {epoch + 1}")
        self.commit(epoch + 1, {k: float(v) for k, v in logs.items()}, self.timer.seconds[-1])
        if self._stop_requested(epoch_end=True):
            raise Preempted(epoch, self.steps_per_epoch)

    def commit_partial(self, epoch: int, batches: int) -> None:
        """Back up the middle of epoch `epoch + 1` (0-based `epoch`): weights, then state."""
        weights = self._save_weights(f"epoch-{epoch}-batch-{batches}.weights.h5")
        self._commit(dataclasses.replace(self.state, batch=batches, weights=weights))

    def commit(self, epoch: int, row: dict, train_seconds: float) -> None:
        state, out = self.state, self.out
        weights = self._save_weights(f"epoch-{epoch}.weights.h5")
        files.save_model(self.model, files.join(out, "checkpoints", "last.keras"))
        value = row.get(self.monitor)
        improved = value is not None and (state.best is None or value > state.best)
        if improved:
            files.save_model(self.model, files.join(out, "checkpoints", "best.keras"))
        history = [*state.history, row]
        files.write_text(files.join(out, "history.csv"), rundir.history_csv(history))
        self._batch_offset = 0
        new = dataclasses.replace(
            state,
            epoch=epoch,
            batch=0,
            weights=weights,
            history=history,
            epoch_seconds=[*state.epoch_seconds, train_seconds],
            best=value if improved else state.best,
        )  # `segments`: this segment's entry is updated in place
        self._commit(new)

    def _save_weights(self, name: str) -> str:
        files.save_weights(self.model, files.join(backup_dir(self.out), name))
        return name

    def _commit(self, new: RunState) -> None:
        """Commit `new` (state.json, the commit point), then delete the weights it no longer
        points at."""
        folder = backup_dir(self.out)
        self._segment["wall_s"] = time.perf_counter() - self._start
        new = dataclasses.replace(new, previous=_last_whole(self.state))
        files.write_json(files.join(folder, rundir.STATE), dataclasses.asdict(new))
        rundir.prune_backup(folder, new)
        self.state = new


def _last_whole(state: RunState) -> dict | None:
    """The last commit of a whole epoch at or before `state`: what to fall back to."""
    if state.batch:
        return state.previous
    return {"epoch": state.epoch, "batch": 0, "weights": state.weights} if state.weights else None


def training_callbacks(
    out: str,
    state: RunState,
    monitor: str,
    steps_per_epoch: int,
    stop: preemption.StopRequest | None,
    test_ds=None,
    extra: Sequence[keras.callbacks.Callback] = (),
) -> tuple[EpochRecorder, list]:
    """The `EpochRecorder` and the callbacks of `model.fit`, in order: the timer first (its epoch
    ends before the others' epoch-end work), the recorder last (an epoch is committed once every
    other callback has seen it)."""
    timer = EpochTimer()
    recorder = EpochRecorder(out, state, monitor, timer, steps_per_epoch, stop)
    return recorder, [
        timer,
        keras.callbacks.TerminateOnNaN(raise_error=True),
        WeightDecayTerm(),
        *([TestErrorCurve(test_ds)] if test_ds is not None else []),
        keras.callbacks.TensorBoard(files.join(out, "logs")),
        *extra,
        recorder,
    ]
