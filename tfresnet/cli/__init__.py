"""The `tfresnet` command: thin subcommands over the library, flags parsed by absl.

    tfresnet train [--model=resnet20 --dataset=digits ...]   train with the paper's recipe
    tfresnet evaluate --model_path=RUN_DIR_OR_KERAS          top-1/top-5 test error
    tfresnet tune --tuner=grid --shortcut=A,B,C,none ...      KerasTuner search
    tfresnet export --model_path=M.keras --export_dir=DIR    SavedModel for TF Serving
    tfresnet predict --model=EXPORT_DIR image.jpg ...        top-k classes of image files
    tfresnet models                                          the model table

`tfresnet <command> --help` lists a command's flags. Every error is one line on stderr
(`--traceback` adds the Python traceback) and an exit status: 2 bad input (the message says what
was wrong and what is allowed), 1 a run that failed, 130 interrupted (run the command again to
resume), 138 a lost peer worker or a run directory in use (retryable: run the same command
again), 143 stopped by SIGTERM (training backs up first; the same command resumes).

The output suits terminals and logs alike: TensorFlow's C++ notices are hidden (`--verbose_logs`
shows them; a TF_CPP_MIN_LOG_LEVEL you set is kept), and Keras' progress bar becomes one line
per epoch when stdout is not a terminal (`--verbose` chooses).
"""

import importlib
import signal
import sys
from typing import TYPE_CHECKING

from tfresnet import preemption
from tfresnet.cli import native_logs

if TYPE_CHECKING:
    from absl import flags

COMMANDS = ("train", "evaluate", "tune", "export", "predict", "models")


def command_modules() -> dict:
    """{command: its module}: each defines `define_flags(fv)` and `run(fv, args)`, the flags
    filling the arguments of the library function a notebook would call. Imported on first use:
    they import TensorFlow, which must wait for `run` to set the log environment."""
    return {command: importlib.import_module(f"tfresnet.cli.{command}") for command in COMMANDS}


EXIT_USAGE = 2  # bad flags or input: fix the command
EXIT_FAILED = 1  # the run failed for a reason a retry will not fix
EXIT_RETRY = 138  # a peer worker was lost, or the run directory is busy: retry the same command
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT: the run resumes when the command is run again
EXIT_PREEMPTED = 143  # SIGTERM: backed up mid-epoch and stopped; retryable


def main(argv: list[str]) -> int:
    """Run one subcommand; returns the exit status (see the EXIT_* codes)."""
    from absl import flags  # here: `run` installs the SIGTERM handler before any import

    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(__doc__.strip(), end="\n\n")
        return 0 if len(argv) >= 2 else _error(f"give a command; allowed: {', '.join(COMMANDS)}.")
    command = argv[1]
    if command not in COMMANDS:
        return _error(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}.")
    module = command_modules()[command]
    fv = flags.FlagValues()
    module.define_flags(fv)
    flags.DEFINE_bool("help", False, "Show this command's flags.", flag_values=fv, short_name="h")
    flags.DEFINE_bool(
        "traceback", False, "On an error, print the Python traceback too.", flag_values=fv
    )
    native_logs.define_flag(fv)  # read by `run` before TensorFlow loads; listed in --help
    try:
        args = fv([f"tfresnet {command}", *argv[2:]])
    except flags.Error as err:
        return _error(f"tfresnet {command}: {err} (see `tfresnet {command} --help`)")
    if fv.help:  # a section per group, in the order the command defined them (absl sorts them)
        sections = (fv.module_help(group) for group in fv.flags_by_module_dict())
        print(f"tfresnet {command} flags:\n" + "\n".join(sections))
        return 0
    if args[1:] and not getattr(module, "TAKES_ARGUMENTS", False):
        return _error(
            f"tfresnet {command} takes flags only (--name=value); got {' '.join(args[1:])!r}."
        )
    try:
        return module.run(fv, args[1:])
    except BaseException as err:  # noqa: BLE001 -- every failure becomes one line and a code
        status, message = classify_error(err, fv)
        if fv.traceback:
            import traceback

            traceback.print_exc()
        return _error(message, status)


def _error(message: str, status: int = EXIT_USAGE) -> int:
    """Print a command's one error line; returns its exit status."""
    print(f"error: {message}", file=sys.stderr)
    return status


def classify_error(err: BaseException, fv: "flags.FlagValues | None" = None) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that ended a command; interruptions are
    told apart before anything is imported (they may come while TensorFlow is importing)."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; run the same command again to resume the run."
    if isinstance(err, Terminated):
        return EXIT_PREEMPTED, (
            "SIGTERM: stopped; a training run resumes from its last backup when the same "
            "command runs again."
        )
    import tensorflow as tf

    from tfresnet.cluster import WorkersMissing
    from tfresnet.rundir import Preempted
    from tfresnet.runlock import RunDirInUse
    from tfresnet.train import TrainingError

    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, Preempted):
        return EXIT_PREEMPTED, f"SIGTERM: {first}."
    if isinstance(err, tf.errors.UnavailableError | tf.errors.DeadlineExceededError):
        return EXIT_RETRY, _lost_worker_message(err.message or str(err), fv)
    if isinstance(err, RunDirInUse | WorkersMissing):  # worth a retry once the others are there
        return EXIT_RETRY, first
    if isinstance(err, TrainingError):
        return EXIT_FAILED, first
    if isinstance(err, PermissionError | IsADirectoryError | NotADirectoryError):
        return EXIT_FAILED, f"cannot write or read {err.filename!r}: {err.strerror}."
    if isinstance(err, ValueError | FileNotFoundError):
        return EXIT_USAGE, first
    if isinstance(err, OSError):
        return EXIT_FAILED, first
    if isinstance(err, tf.errors.OpError):
        # TensorFlow's own words, without its {{function_node ...}} prefix.
        text = (err.message or first).split("}}")[-1].strip().splitlines()[0]
        return EXIT_FAILED, f"{type(err).__name__}: {text}"
    hint = "" if fv is not None and fv.traceback else " (--traceback shows where)"
    return EXIT_FAILED, f"{type(err).__name__}: {first}{hint}"


# Where TensorFlow names the worker it lost: the coordination service's "The following tasks
# are unhealthy (stopped sending heartbeats):" list, "Error reported from /job:worker/task:1",
# gRPC's "from remote target /job:worker/replica:0/task:0" (the leader gone), or a socket's
# "Peer /job:worker/replica:0/task:1 is unreachable".
_TASK = r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)"
_LOST_TASKS = (
    r"unhealthy[^:]*:((?:\s*/job:\w+/replica:\d+/task:\d+)+)",
    rf"reported from {_TASK}",
    rf"remote target {_TASK}",
    rf"Peer {_TASK}",
)


def lost_workers(detail: str, own: tuple | None = None) -> list:
    """The workers (job, index) that TensorFlow's error text `detail` says were lost, in the
    order named, never `own` (this worker: its own devices appear in the text too)."""
    import re

    found = []
    for pattern in _LOST_TASKS:
        for match in re.finditer(pattern, detail):
            for job, index in re.findall(_TASK, match.group(0)):
                task = (job, int(index))
                if task != own and task not in found:
                    found.append(task)
    return found


def _lost_worker_message(detail, fv):
    """Which worker was lost, and the epoch every worker resumes from when restarted."""
    from tfresnet import cluster, rundir

    try:
        task = cluster.read_tf_config()["task"]
        own = (task["type"], task["index"])
    except ValueError:  # no TF_CONFIG: no worker of a cluster
        own = None
    lost = lost_workers(detail, own)
    who = ", ".join(f"{job} {index}" for job, index in lost) if lost else "a peer worker"
    resume = ""
    run_dir = fv.run_dir if fv is not None and "run_dir" in fv else None
    if run_dir:
        try:
            resume = f" from epoch {rundir.load_state(run_dir).epoch + 1}"
        except ValueError:  # a damaged backup: the rerun refuses it, naming the file
            pass
    return (
        f"lost contact with {who} (it stopped, or the network between the workers failed). "
        f"Restart every worker with the same command: the run resumes{resume}."
    )


class Terminated(BaseException):
    """SIGTERM where no training loop can back up: the command unwinds at once, its clean-ups
    running (temporary files), and exits with EXIT_PREEMPTED."""


class _Sigterm:
    """The command's SIGTERM handler: inside a training loop, training backs up after its
    current call and stops with EXIT_PREEMPTED; anywhere else, or at a second SIGTERM,
    `Terminated`, once. It imports nothing and only sets its `stop` (which training finds
    through `preemption.installed`), so it can run at any instant."""

    def __init__(self):
        self.ending = False  # set once the command has its exit status: it is only exiting
        self.stop = preemption.StopRequest()

    def __call__(self, signum, frame):
        if self.ending:
            return
        if self.stop.in_training.is_set() and not self.stop.requested.is_set():
            self.stop.requested.set()
            return
        self.ending = True
        raise Terminated()


def _stop_on_sigterm():
    """Install the SIGTERM handler (`_Sigterm`); returns it."""
    handler = _Sigterm()
    signal.signal(signal.SIGTERM, handler)
    return handler


def run() -> None:
    """Console-script entry point (`tfresnet`, `python -m tfresnet.cli`); exits with the status.
    The SIGTERM handler comes first, then the native log filter (`native_logs`), then
    TensorFlow."""
    try:
        # Inside the try: the handler can fire before signal.signal has even returned.
        _stop_on_sigterm()
        level = native_logs.configure(sys.argv)
        with native_logs.filtered_stderr(level):
            if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
                command_modules()  # imports TensorFlow, with the log environment set
            status = main(sys.argv)
    except (Terminated, KeyboardInterrupt) as err:  # while importing, or while main reported
        status, message = classify_error(err)
        _error(message, status)
    # The status is decided: a SIGTERM while the interpreter shuts down changes nothing (Python
    # puts back the default disposition, which would kill the process, only for handlers other
    # than SIG_IGN).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(status)
