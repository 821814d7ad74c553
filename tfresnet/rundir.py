"""A run directory on disk: its config, its committed epochs, and how a killed run resumes.

    <run_dir>/config.json           the run (written once everything is validated)
    <run_dir>/backup/state.json     the commit point of the last finished epoch
    <run_dir>/backup/epoch-K.weights.h5   its weights and optimizer state
    <run_dir>/history.csv           one row per committed epoch
    <run_dir>/checkpoints/{last,best}.keras
    <run_dir>/model.keras, export/, results.json   written once training is over

An epoch is committed by `EpochRecorder` in this order: weights under a new name, the
checkpoints, history.csv, then `state.json` (the one file that says which epoch is done), then
the older weights are deleted. A kill before `state.json` is replaced redoes that epoch; a kill
after it keeps it. Every file is written atomically (`tfresnet.files`). The backup stays until
`results.json` is written, so a kill while evaluating, saving or exporting resumes there without
training again.

`RUN_LAYOUT` and `SEARCH_LAYOUT` list every name a run (a search) of ours writes; `clear`, the
one thing behind `--overwrite`, removes only those and refuses a folder that holds anything else.
"""

import csv
import dataclasses
import io
import logging
import math
import re
import time

import keras
import tensorflow as tf

from tfresnet import distribute, export, files, machine
from tfresnet.preemption import IN_TRAINING, STOP_REQUESTED
from tfresnet.timing import EpochTimer

STATE = "state.json"
RESULTS = "results.json"
# Under multi-worker training the workers agree on a stop request about this often (one small
# all-reduce each time): well inside a cluster's grace period, and too rare to slow training.
AGREE_EVERY_MS = 1000
LEGACY_METADATA = "training_metadata.json"  # Keras' BackupAndRestore (runs started before v0.2)
LEGACY_WEIGHTS = "latest.weights.h5"
LEGACY_EXPORT_LOCK = ".models.config.lock"  # export/'s lock file, before it locked the folder

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Training stopped on request (`STOP_REQUESTED`) after backing up mid-epoch."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(
            f"stopped on request in epoch {epoch + 1} after {batch} batches; the backup holds "
            "them, and running the same command again resumes there"
        )
        self.epoch, self.batch = epoch, batch


@dataclasses.dataclass
class RunState:
    """What the last committed epoch left: how far training got and everything recorded so far.

    `history` has one dict per committed epoch (the Keras logs of that epoch); `epoch_seconds`
    the training time of each (evaluation excluded); `segments` one entry per process that
    trained (its first epoch includes tracing, so speed is measured without it), with the
    machine it ran on, since a resumed run may move between machines.
    """

    epoch: int = 0
    batch: int = 0  # batches of epoch `epoch + 1` already trained (a preemption backup)
    weights: str | None = None  # file name in backup/ of this epoch's weights
    previous: dict | None = None  # the commit before this one: {"epoch", "weights"}
    history: list = dataclasses.field(default_factory=list)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    segments: list = dataclasses.field(default_factory=list)  # [{first_epoch, wall_s, hardware}]
    best: float | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class ForeignFiles(ValueError):
    """`clear` refused: the folder holds entries that no run of ours writes. Nothing removed."""


# Every name a run of ours writes, so all that `clear` may remove. Keys are regular expressions
# over one name; a value says what the entry is: FILE, TREE (a folder whose whole tree a library
# writes: a SavedModel version, TensorBoard's plugins), a dict (a folder of such entries) or a
# test of the file's contents. Temporary names (`files.TEMP_MARK` first) are ours everywhere.
FILE = "file"
TREE = "tree"
EXPORT_LAYOUT = {
    rf"{re.escape(export.CONFIG_FILE)}|{re.escape(LEGACY_EXPORT_LOCK)}": FILE,
    export.MODEL_NAME_PATTERN: {r"\d+": TREE},  # <model name>/<version>/, a SavedModel
}
RUN_LAYOUT = {
    rf"config\.json|{re.escape(RESULTS)}|history\.csv|model\.keras": FILE,
    "checkpoints": {r"(last|best)\.keras": FILE},
    "backup": {
        rf"{re.escape(STATE)}|epoch-\d+(-batch-\d+)?\.weights\.h5": FILE,
        rf"{re.escape(LEGACY_WEIGHTS)}|{re.escape(LEGACY_METADATA)}": FILE,
    },
    "logs": {"train|validation": {r"events\.out\.tfevents\..+": FILE, "plugins": TREE}},
    "export": EXPORT_LAYOUT,
}


def _tuner_state(path: str) -> bool:
    """KerasTuner's state of one tuner, `<KERASTUNER_TUNER_ID>.json`, which holds `{}`."""
    return tf.io.gfile.stat(path).length <= 16 and files.read_text(path).strip() == "{}"


SEARCH_LAYOUT = {  # tfresnet tune's search directory: ours and KerasTuner's
    r"search\.json|results\.(json|csv|md)|best_export\.json|oracle\.json": FILE,
    r"trial_\w+": {
        r"trial\.json|build_config\.json|checkpoint\.weights\.h5|attempts\.jsonl": FILE,
        "run": RUN_LAYOUT,
    },
    "export": EXPORT_LAYOUT,
    r".+\.json": _tuner_state,
}


def foreign_entries(folder: str, layout: dict = RUN_LAYOUT) -> list:
    """The paths under `folder` (relative; a folder ends in "/") that `layout` does not list."""
    found = []
    for name in sorted(files.listdir(folder)):
        path = files.join(folder, name)
        is_dir = tf.io.gfile.isdir(path)
        kind = None if name.startswith(files.TEMP_MARK) else _kind(layout, name, path, is_dir)
        if kind is False:
            found.append(name + ("/" if is_dir else ""))
        elif isinstance(kind, dict):
            found += [f"{name}/{sub}" for sub in foreign_entries(path, kind)]
    return found


def _kind(layout, name, path, is_dir):
    """What `layout` says the entry `name` is (FILE, TREE, a dict, a test); False: not ours."""
    for pattern, kind in layout.items():
        folder = kind == TREE or isinstance(kind, dict)
        if re.fullmatch(pattern, name) and is_dir == folder and (not callable(kind) or kind(path)):
            return kind
    return False


def check_clearable(folder: str, layout: dict = RUN_LAYOUT, *, hint: str) -> None:
    """`ForeignFiles` if `folder` holds anything that `layout` does not list (a folder of the
    user's, given as --run_dir); `hint` says what to do then."""
    foreign = foreign_entries(folder, layout) if files.exists(folder) else []
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if foreign[5:] else "")
        raise ForeignFiles(
            f"{folder!r} holds files that no tfresnet run wrote ({shown}); {hint}. Nothing was "
            "removed."
        )


def clear(folder: str, layout: dict = RUN_LAYOUT, *, hint: str) -> None:
    """Remove what a run (`layout`) of ours wrote in `folder`: what --overwrite deletes, and
    nothing else. The folder stays, and with it the lock on it (`runlock`). Refused
    (`check_clearable`), with nothing removed, if the folder holds anything else."""
    check_clearable(folder, layout, hint=hint)
    if files.exists(folder):
        for name in files.listdir(folder):
            files.remove(files.join(folder, name))


def backup_dir(run_dir: str) -> str:
    return files.join(run_dir, "backup")


def finished(run_dir: str) -> bool:
    """Whether `run_dir` holds a finished run: training wrote its results.json last."""
    return files.exists(files.join(run_dir, RESULTS))


def resumable(run_dir: str) -> bool:
    """Whether `run_dir` holds an unfinished run with a backup that training would continue
    from (`load_state` reads it: an unreadable one is not)."""
    return not finished(run_dir) and load_state(run_dir).weights is not None


def read_config(path: str) -> dict:
    """A run's `config.json` (at `path`) as a dict; `files.CorruptFile` if it is not one."""
    config = files.read_json(path)
    if not isinstance(config, dict):
        raise files.CorruptFile(f"{path} is not a run config (a JSON object)")
    return config


def load_state(run_dir: str) -> RunState:
    """The last committed state of `run_dir`, or a fresh one when nothing was committed."""
    folder = backup_dir(run_dir)
    path = files.join(folder, STATE)
    if files.exists(path):
        try:
            state = RunState(**files.read_json(path))
            if not (isinstance(state.epoch, int) and isinstance(state.batch, int)):
                raise TypeError(f"epoch {state.epoch!r} and batch {state.batch!r} are no counts")
        except (ValueError, TypeError) as err:
            raise _damaged(path, err) from err
        return state
    legacy = files.join(folder, LEGACY_METADATA)
    if files.exists(legacy):  # a backup made by Keras' BackupAndRestore
        try:
            epoch = int(files.read_json(legacy)["epoch"])
        except (ValueError, KeyError, TypeError) as err:
            raise _damaged(legacy, err) from err
        history = read_history_rows(files.join(run_dir, "history.csv"))[:epoch]
        if len(history) == epoch:
            return RunState(epoch=epoch, weights=LEGACY_WEIGHTS, history=history)
    return RunState()


def _damaged(path: str, err: Exception) -> files.CorruptFile:
    """The refusal of a backup record that does not read. It is written whole, so something
    else changed it; training from epoch 1 instead would silently throw the run away."""
    detail = str(err) if isinstance(err, files.CorruptFile) else f"{path}: {err}"
    return files.CorruptFile(
        f"{detail}. This record of the last finished epoch is written whole, so something else "
        "damaged it: restore it from a copy, or use --overwrite to train the run again from "
        "epoch 1."
    )


def restore(model, run_dir: str, state: RunState, steps_per_epoch: int | None = None) -> RunState:
    """Load the weights of `state` into `model` (compiled, optimizer built here).

    A weights file that does not load (a disk fault, a copy cut short) falls back to the commit
    before it, saying so; when none loads, `files.CorruptFile` (never a silent fresh start). A
    mid-epoch backup that holds a whole epoch of `steps_per_epoch` batches (older versions
    stopped so at an epoch's last step) falls back too: its epoch has no history row, so it is
    trained again. Returns the state restored.
    """
    if not state.weights:
        return RunState()
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    whole = steps_per_epoch is not None and state.batch >= steps_per_epoch
    candidates = [] if whole else [(state.epoch, state.weights, state)]
    if state.previous:
        prev = state.previous
        n = prev["epoch"]
        candidates.append(
            (
                n,
                prev["weights"],
                dataclasses.replace(
                    state,
                    epoch=n,
                    batch=prev.get("batch", 0),
                    weights=prev["weights"],
                    previous=None,
                    history=state.history[:n],
                    epoch_seconds=state.epoch_seconds[:n],
                    segments=[s for s in state.segments if s["first_epoch"] <= n],
                ),
            )
        )
    failed = []
    for epoch, name, candidate in candidates:
        path = files.join(backup_dir(run_dir), name)
        try:
            model.load_weights(path)
        except (OSError, ValueError) as err:
            failed.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            log.warning("The backup of epoch %d does not load (%s).", epoch, failed[-1])
            continue
        if candidate is not state:
            log.warning("Resuming from epoch %d, the last backup that loads.", epoch)
        return candidate
    if failed:
        raise files.CorruptFile(
            f"No backup in {backup_dir(run_dir)} loads ({'; '.join(failed)}): restore them from "
            "a copy, or use --overwrite to train the run again from epoch 1."
        )
    return RunState()


def history_csv(rows: list) -> str:
    """CSV text of the per-epoch logs (an `epoch` column first, as Keras' CSVLogger writes)."""
    keys = sorted({k for row in rows for k in row})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i, row in enumerate(rows):
        writer.writerow([i, *[_csv_value(row.get(k)) for k in keys]])
    return out.getvalue()


def _csv_value(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def read_history_rows(path: str) -> list:
    """The rows of a history.csv as dicts of floats (no `epoch` key); [] if there is none."""
    if not files.exists(path):
        return []
    rows = list(csv.DictReader(io.StringIO(files.read_text(path))))

    def number(value):
        return float(value) if value not in (None, "", "NA") else None

    return [{k: number(v) for k, v in row.items() if k != "epoch"} for row in rows]


def curves(rows: list) -> dict:
    """{key: [value per epoch]} from per-epoch log rows."""
    keys = sorted({k for row in rows for k in row})
    return {k: [row.get(k) for row in rows] for k in keys}


def read_history(path: str) -> dict:
    """A history.csv as {key: [values]}; {} if there is none."""
    return curves(read_history_rows(path))


class EpochRecorder(keras.callbacks.Callback):
    """Commits each finished epoch to `out` (see the module doc for the order); put it last.

    `out` is where this worker writes (the run directory on the chief). `monitor` picks
    `checkpoints/best.keras` (higher is better). A non-finite loss is never committed.
    """

    def __init__(
        self, out: str, state: RunState, monitor: str, timer: EpochTimer, steps_per_epoch: int
    ):
        super().__init__()
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
        IN_TRAINING.set()  # cleared by the caller of fit when it returns or raises

    def _stop_requested(self, epoch_end: bool = False) -> bool:
        """Whether to stop now. With several workers, whether any was asked to: they agree at
        every epoch end and every AGREE_EVERY_MS or so in between, at steps that they all
        compute alike from the sum of their step times (`distribute.summed_over_workers`)."""
        asked = STOP_REQUESTED.is_set()
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
        state, folder = self.state, backup_dir(self.out)
        name = f"epoch-{epoch}-batch-{batches}.weights.h5"
        files.save_weights(self.model, files.join(folder, name))
        self._segment["wall_s"] = time.perf_counter() - self._start
        new = dataclasses.replace(
            state,
            batch=batches,
            weights=name,
            previous=_last_whole(state),
        )
        files.write_json(files.join(folder, STATE), new.to_json())
        _prune(folder, new)
        self.state = new

    def commit(self, epoch: int, row: dict, train_seconds: float) -> None:
        state, out = self.state, self.out
        folder = backup_dir(out)
        name = f"epoch-{epoch}.weights.h5"
        files.save_weights(self.model, files.join(folder, name))
        files.save_model(self.model, files.join(out, "checkpoints", "last.keras"))
        value = row.get(self.monitor)
        improved = value is not None and (state.best is None or value > state.best)
        if improved:
            files.save_model(self.model, files.join(out, "checkpoints", "best.keras"))
        history = [*state.history, row]
        files.write_text(files.join(out, "history.csv"), history_csv(history))
        self._segment["wall_s"] = time.perf_counter() - self._start
        self._batch_offset = 0
        new = RunState(
            epoch=epoch,
            batch=0,
            weights=name,
            previous=_last_whole(state),
            history=history,
            epoch_seconds=[*state.epoch_seconds, train_seconds],
            segments=state.segments,  # this segment's entry is updated in place
            best=value if improved else state.best,
        )
        files.write_json(files.join(folder, STATE), new.to_json())  # the commit point
        _prune(folder, new)
        self.state = new


def _last_whole(state: RunState) -> dict | None:
    """The last commit of a whole epoch at or before `state`: what to fall back to."""
    if state.batch:
        return state.previous
    return {"epoch": state.epoch, "batch": 0, "weights": state.weights} if state.weights else None


def _prune(folder: str, state: RunState) -> None:
    """Delete backup weights that `state` no longer points at (it keeps two)."""
    keep = {state.weights, state.previous["weights"] if state.previous else None}
    for name in tf.io.gfile.listdir(folder):
        name = name.rstrip("/")
        if name.endswith(".weights.h5") and name not in keep and files.TEMP_MARK not in name:
            files.remove(files.join(folder, name))
    for legacy in (LEGACY_WEIGHTS, LEGACY_METADATA):
        if legacy not in keep:
            files.remove(files.join(folder, legacy))


def train_images_per_second(state: RunState, images_per_epoch: int) -> float | None:
    """Training images/s over the committed epochs, leaving out each segment's first (tracing)."""
    firsts = {s["first_epoch"] for s in state.segments}
    seconds = [t for i, t in enumerate(state.epoch_seconds, 1) if i not in firsts]
    seconds = seconds or state.epoch_seconds
    return images_per_epoch * len(seconds) / sum(seconds) if seconds and sum(seconds) else None
