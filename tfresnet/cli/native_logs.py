"""TensorFlow's native (C++) log lines: hidden by the CLI unless asked for with --verbose_logs.

TensorFlow's C++ side writes its notices straight to file descriptor 2, past Python's
`sys.stderr`. Before any command output, `import tensorflow` alone prints the oneDNN note,
"Could not find cuda drivers", the CPU feature guard and absl's "All log messages before
absl::InitializeLog() ..." (twice: the profiler plugin carries its own copy of the runtime), and
the first device lookup adds a cuInit error on a machine without a GPU. The CLI entry point
(`tfresnet.cli.run`) quiets them in two steps, before TensorFlow is imported:

1. `configure`: TF_CPP_MIN_LOG_LEVEL=3 and GRPC_VERBOSITY=ERROR, unless the user set them.
   TensorFlow then drops INFO, WARNING and ERROR messages (FATAL ones stay) for the whole run:
   cuInit errors, CPU feature notes, the end-of-sequence notice of a distributed iterator
   ("Local rendezvous is aborting ... [[{{node MultiDeviceIteratorGetNextFromShard}}]]").
2. `filtered_stderr` around `import tensorflow`: the lines logged while TensorFlow's libraries
   load come before absl's logging is initialised, and absl writes those whatever the level
   (abseil/abseil-cpp#1718), so fd 2 goes through a pipe for the import and log lines below the
   level are dropped, with their continuation lines. Everything else (Python warnings and
   errors, FATAL lines) is passed on unchanged. Only the import is filtered (and the benchmark
   runs of a clone's benchmarks/bench.py, whose fresh processes each load TensorFlow again), so a
   crash can hardly lose a line.

`--verbose_logs` leaves the environment and fd 2 as they are: TensorFlow prints what it prints.
A user-set TF_CPP_MIN_LOG_LEVEL is kept, and the import filter applies that level instead of 3.
"""

import contextlib
import os
import re
import sys
import threading

from absl import flags

DEFAULT_LEVEL = 3  # TF_CPP_MIN_LOG_LEVEL: 0 shows INFO, 1 WARNING, 2 ERROR, 3 only FATAL
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": str(DEFAULT_LEVEL), "GRPC_VERBOSITY": "ERROR"}
SEVERITIES = "IWEF"  # absl's severity letters; the index is the TF_CPP_MIN_LOG_LEVEL value
# absl's line prefix: severity, MMDD hh:mm:ss.micros (before absl::InitializeLog: 0000 00:00:
# and the seconds since 1970), thread id, file:line]
LOG_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
PRE_INIT_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
# Lines that continue the log message before them: a status's "\t [[{{node ...}}]]" trail and
# the second line of the CPU feature guard's note.
CONTINUATIONS = ("\t", "To enable the following instructions:")


def define_flag(fv):
    flags.DEFINE_bool(
        "verbose_logs",
        False,
        "Show TensorFlow's native (C++) log lines too (by default the CLI hides them).",
        flag_values=fv,
    )


def wants_verbose_logs(argv):
    """Whether `argv` (`tfresnet COMMAND [flags]`) asks for --verbose_logs; parsed by absl."""
    fv = flags.FlagValues()
    define_flag(fv)
    try:
        fv(["tfresnet", *argv[2:]], known_only=True)
    except flags.Error:  # a bad value: the command's own parse reports it
        return False
    return fv.verbose_logs


def configure(argv, environ=None):
    """Set the log environment for the run; the level `filtered_stderr` applies, or None.

    Call before TensorFlow is imported (TensorFlow reads these variables when it loads).
    """
    environ = os.environ if environ is None else environ
    if wants_verbose_logs(argv):
        return None
    for key, value in ENVIRONMENT.items():
        environ.setdefault(key, value)
    return level_in_effect(environ)


def level_in_effect(environ=None):
    """The TF_CPP_MIN_LOG_LEVEL TensorFlow applies (0 when unset or not a number), at most 3."""
    text = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "").strip()
    return min(int(text), DEFAULT_LEVEL) if text.isdigit() else 0


def hidden(line, level):
    """Whether `line` is a native log line below `level` (severity index < level)."""
    match = LOG_LINE.match(line)
    if match:
        return SEVERITIES.index(match.group(1)) < level
    return line.startswith(PRE_INIT_NOTICE) and SEVERITIES.index("W") < level


def filter_lines(lines, level):
    """The lines (str or bytes) of `lines` that are not hidden at `level`, in order."""
    dropping = False
    for line in lines:
        text = line.decode(errors="replace") if isinstance(line, bytes) else line
        if dropping and text.startswith(CONTINUATIONS):
            continue
        dropping = hidden(text, level)
        if not dropping:
            yield line


@contextlib.contextmanager
def filtered_stderr(level):
    """Within the block, what is written to fd 2 passes `filter_lines(..., level)`.

    A thread copies the pipe to the original stderr line by line; on exit fd 2 is restored
    and the thread drains what is left. No-op for None or 0 (nothing to hide).
    """
    if not level:
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    copier = threading.Thread(target=_copy, args=(read_end, original, level), daemon=True)
    copier.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the copier reads to EOF
        copier.join(timeout=10)  # a child process still holding the pipe keeps it open
        if not copier.is_alive():
            os.close(original)


def _copy(read_end, original, level):
    with os.fdopen(read_end, "rb") as pipe, open(original, "wb", closefd=False) as out:
        for line in filter_lines(pipe, level):
            out.write(line)
            out.flush()
