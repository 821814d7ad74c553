"""A run directory on disk: its config, its committed epochs, and how a killed run resumes.

    <run_dir>/config.json           the run (written once everything is validated)
    <run_dir>/backup/state.json     the commit point of the last finished epoch
    <run_dir>/backup/epoch-K.weights.h5   its weights and optimizer state
    <run_dir>/history.csv           one row per committed epoch
    <run_dir>/checkpoints/{last,best}.keras
    <run_dir>/model.keras, export/, results.json   written once training is over

`callbacks.EpochRecorder` commits each epoch, `state.json` last; every file is written atomically
(`tfresnet.files`). The backup stays until `results.json` is written (`finish`), so a kill while
evaluating, saving or exporting resumes there without training again. (The commit point of
`tf.train.CheckpointManager` covers only its weights; state.json also covers history.csv, the
checkpoints and the timings.)

`RUN_LAYOUT` and `SEARCH_LAYOUT` list every name a run (a search) of ours writes; `clear`, the
one thing behind `--overwrite`, removes only those and refuses a folder that holds anything else.
"""

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import re
from collections.abc import Iterator

import tensorflow as tf

from tfresnet import distribute, export, files, runlock

STATE = "state.json"
RESULTS = "results.json"
LEGACY_METADATA = "training_metadata.json"  # Keras' BackupAndRestore (runs started before v0.2)
LEGACY_WEIGHTS = "latest.weights.h5"
LEGACY_EXPORT_LOCK = ".models.config.lock"  # export/'s lock file, before it locked the folder
OVERWRITE_HINT = (
    "--overwrite deletes only what a run wrote: move those files away, or use another --run_dir"
)

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Training stopped on request (`preemption.StopRequest`) after backing up mid-epoch."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(
            f"stopped on request in epoch {epoch + 1} after {batch} batches; the backup holds "
            "them, and running the same command again resumes there"
        )
        self.epoch, self.batch = epoch, batch


@dataclasses.dataclass
class RunState:
    """What the last committed epoch left: how far training got and everything recorded so far:
    each epoch's Keras logs (`history`) and training seconds (evaluation excluded), and one
    `segments` entry per process that trained (its first epoch includes tracing, so speed is
    measured without it) with its machine, since a resumed run may move between machines."""

    epoch: int = 0
    batch: int = 0  # batches of epoch `epoch + 1` already trained (a preemption backup)
    weights: str | None = None  # file name in backup/ of this epoch's weights
    previous: dict | None = None  # the commit before this one: {"epoch", "weights"}
    history: list = dataclasses.field(default_factory=list)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    segments: list = dataclasses.field(default_factory=list)  # [{first_epoch, wall_s, hardware}]
    best: float | None = None


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


@contextlib.contextmanager
def started(run_dir: str, config) -> Iterator[runlock.Hold]:
    """Hold `run_dir` (`runlock`), clear it for `config.overwrite` (`clear`) and write a new run's
    config.json; yields the hold. A start that ends before anything could be resumed (diverged in
    its first epoch, interrupted) removes that config.json again, which would refuse the
    corrected command as a different run; only that file: the folder may hold other things."""
    files.makedirs(run_dir)
    with runlock.exclusive(run_dir) as hold:
        if config.overwrite:
            clear(run_dir, hint=OVERWRITE_HINT)  # the directory stays, and with it the lock
        path = files.join(run_dir, "config.json")
        new_run = not files.exists(path)
        if new_run:
            files.write_json(path, dataclasses.asdict(config))
        try:
            yield hold
        except BaseException:
            if new_run and not (resumable(run_dir) or finished(run_dir)):
                files.remove(path)
            raise


@contextlib.contextmanager
def writing(run_dir: str, strategy, held: runlock.Hold | None = None) -> Iterator[str]:
    """Where this worker writes (`distribute.writable_dir`: `run_dir` on the chief), held for
    this process (`runlock.exclusive`; `held` is the caller's hold of it) while the block runs."""
    with distribute.writable_dir(run_dir, strategy) as out, runlock.exclusive(out, held):
        yield out


def finish(
    out: str, model, results: dict, *, export_as: str | None, class_names=(), flip: bool = False
) -> dict:
    """Write a finished run: model.keras, the SavedModel (`export_as` a model name, or None;
    `flip`: it averages each image's prediction with its mirror's), results.json, then drop the
    backup. A kill anywhere redoes only what is missing; a complete export is kept."""
    files.save_model(model, files.join(out, "model.keras"))
    if export_as is not None:
        results["export"] = _export_once(out, model, model_slug(export_as), class_names, flip)
    files.write_json(files.join(out, RESULTS), results)
    files.remove(backup_dir(out))  # only now: everything it could redo is written
    return results


def _export_once(out: str, model, name: str, class_names, flip: bool) -> str:
    """Version 1 of the run's SavedModel, unless a complete one is there already."""
    model_dir = files.join(out, "export", name)
    files.remove_stale_temps(model_dir)
    final = files.join(model_dir, "1")
    if files.exists(final):
        return final
    if flip:  # BN folded first: the folding sees no nested model
        from tfresnet import evaluate, inference

        model = evaluate.flip_averaged(inference.fold_batch_norm(model))
    return export.export_for_serving(
        model,
        files.join(out, "export"),
        model_name=name,
        class_names=list(class_names) or None,
        version=1,
        fold_batch_norm=not flip,
    )


def data_slug(name: str) -> str:
    """A file name for a data set name or folder (its last path part)."""
    return os.path.basename(os.path.normpath(str(name))) or "data"


def model_slug(model: str) -> str:
    """A file and TF Serving name for a model name or spec string ("resnet20:width_..." ->
    "resnet20-width_multiplier-2")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(model)).strip("-.") or "model"


def check_startable(run_dir: str, overwrite: bool) -> None:
    """Refuse, before anything loads, a run directory that another process trains in
    (`runlock.RunDirInUse`) or that --overwrite may not clear (`ForeignFiles`)."""
    runlock.ensure_free(run_dir)
    if overwrite:
        check_clearable(run_dir, hint=OVERWRITE_HINT)


def remove_stale_temps(out: str) -> None:
    """Remove the temporary files a kill left in the folders a run writes to whole files."""
    for folder in (out, backup_dir(out), files.join(out, "checkpoints")):
        files.remove_stale_temps(folder)


def backup_dir(run_dir: str) -> str:
    return files.join(run_dir, "backup")


def finished(run_dir: str) -> bool:
    """Whether `run_dir` holds a finished run: training wrote its results.json last."""
    return files.exists(files.join(run_dir, RESULTS))


def resumable(run_dir: str) -> bool:
    """Whether `run_dir` holds an unfinished run with a backup that training would continue
    from (`load_state` reads it: an unreadable one is not)."""
    return not finished(run_dir) and load_state(run_dir).weights is not None


def read_config(path: str, hint: str, kind: str = "run") -> dict:
    """A saved config (a run's `config.json`, a search's `search.json`) as a dict. One that does
    not read as a JSON object is refused in one `files.CorruptFile` line ending in `hint`, what
    to do instead."""
    try:
        config = files.read_json(path)
        if not isinstance(config, dict):
            raise files.CorruptFile(f"{path} is not a {kind} config (a JSON object)")
    except files.CorruptFile as err:
        raise files.CorruptFile(f"{err}: {hint}") from err
    return config


def differences(saved: dict, mine: dict, defaults: dict | None = None) -> list[str]:
    """The dotted names of the fields (of nested dicts too) in which a saved config differs from
    `mine`; a field it lacks, added since it was saved, compares at its value in `defaults`."""
    names = []
    for key in sorted(set(saved) | set(mine)):
        theirs, ours = saved.get(key, (defaults or {}).get(key)), mine.get(key)
        if isinstance(theirs, dict) and isinstance(ours, dict):
            names += [f"{key}.{name}" for name in differences(theirs, ours)]
        elif theirs != ours:
            names.append(key)
    return names


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
    """Load the weights of `state` into `model` (compiled, optimizer built here); returns the
    state restored. Weights that do not load (a disk fault, a copy cut short) fall back to the
    commit before, saying so; when none loads, `files.CorruptFile` (never a silent fresh start).
    A mid-epoch backup holding a whole epoch of `steps_per_epoch` batches (older versions stopped
    so) falls back too: its epoch has no history row, so it is trained again."""
    if not state.weights:
        return RunState()
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    whole = steps_per_epoch is not None and state.batch >= steps_per_epoch
    candidates = [] if whole else [state]
    if state.previous:
        n = state.previous["epoch"]
        candidates.append(
            dataclasses.replace(
                state,
                epoch=n,
                batch=state.previous.get("batch", 0),
                weights=state.previous["weights"],
                previous=None,
                history=state.history[:n],
                epoch_seconds=state.epoch_seconds[:n],
                segments=[s for s in state.segments if s["first_epoch"] <= n],
            )
        )
    failed = []
    for candidate in candidates:
        name = candidate.weights
        try:
            model.load_weights(files.join(backup_dir(run_dir), name))
        except (OSError, ValueError) as err:
            failed.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            log.warning("The backup of epoch %d does not load (%s).", candidate.epoch, failed[-1])
            continue
        if candidate is not state:
            log.warning("Resuming from epoch %d, the last backup that loads.", candidate.epoch)
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


def prune_backup(folder: str, state: RunState) -> None:
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
