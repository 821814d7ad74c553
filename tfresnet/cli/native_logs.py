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
2. `filtered_stderr` around the whole command: lines logged before absl's logging is
   initialised (all of TensorFlow's, in this build: "E0000 00:00:..." ones while its libraries
   load, and later ones such as a collective's abort when a peer worker is lost) are written
   whatever the level (abseil/abseil-cpp#1718), so fd 2 goes through a pipe to a small filter
   process, which drops native log lines below the level, with their continuation lines, and
   passes everything else (Python warnings and errors, FATAL lines) on unchanged. A process,
   not a thread: it reads to the end of the pipe however the command ends, so a crash loses no
   line. Child processes inherit the pipe. (A clone's benchmarks/bench.py, run outside the CLI,
   puts the same filter around its measuring processes, which each load TensorFlow again.)

`--verbose_logs` leaves the environment and fd 2 as they are: TensorFlow prints what it prints.
A user-set TF_CPP_MIN_LOG_LEVEL is kept, and the filter applies that level instead of 3.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys

DEFAULT_LEVEL = 3  # TF_CPP_MIN_LOG_LEVEL: 0 shows INFO, 1 WARNING, 2 ERROR, 3 only FATAL
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": str(DEFAULT_LEVEL), "GRPC_VERBOSITY": "ERROR"}
SEVERITIES = "IWEF"  # absl's severity letters; the index is the TF_CPP_MIN_LOG_LEVEL value
# absl's line prefix: severity, MMDD hh:mm:ss.micros (before absl::InitializeLog: 0000 00:00:
# and the seconds since 1970), thread id, file:line]
LOG_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
PRE_INIT_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
# Lines that continue the log message before them: a status's "\t [[{{node ...}}]]" trail, the
# second line of the CPU feature guard's note, and the lines of a lost peer's status (a task
# list, gRPC's details, TensorFlow's advice), which can come in a read of their own.
CONTINUATIONS = (
    "\t",
    "To enable the following instructions:",
    "/job:",
    ":",
    "Additional GRPC error information",
    "The tasks have crashed.",
    "The error could be from a previous operation.",
)
# Lines Python writes, never part of a native message: the command's error line, a traceback,
# a warning ("path.py:12: UserWarning: ..."), a logging record ("WARNING:tensorflow:...").
PYTHON_LINE = re.compile(r"error: |Traceback |\S+:\d+: \w*Warning: |[A-Z]+:[\w.]+:")


def define_flag(fv):
    from absl import flags  # here, not above: the filter process runs this file without absl

    flags.DEFINE_bool(
        "verbose_logs",
        False,
        "Show TensorFlow's native (C++) log lines too (by default the CLI hides them).",
        flag_values=fv,
    )


def wants_verbose_logs(argv):
    """Whether `argv` (`tfresnet COMMAND [flags]`) asks for --verbose_logs; parsed by absl."""
    from absl import flags

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
    return filter_writes(([line] for line in lines), level)


def filter_writes(writes, level):
    """The lines of `writes` (lists of lines, each as one read of the pipe returned them) that
    are not hidden at `level`, in order.

    A native log message is one write, so the lines read with a hidden one are its
    continuation (a status's task list, "The tasks have crashed ...") unless they are plainly
    Python's (`PYTHON_LINE`: a reader that fell behind may read later writes with it); in a
    later read only the `CONTINUATIONS` prefixes continue it.
    """
    dropping = False
    for write in writes:
        for index, line in enumerate(write):
            text = line.decode(errors="replace") if isinstance(line, bytes) else line
            if dropping and (
                text.startswith(CONTINUATIONS) or (index and not PYTHON_LINE.match(text))
            ):
                continue
            dropping = hidden(text, level)
            if not dropping:
                yield line


@contextlib.contextmanager
def filtered_stderr(level):
    """Within the block, what is written to fd 2 passes `filter_lines(..., level)`.

    A filter process (this file run as a script, standard library only) copies the pipe to the
    original stderr line by line. On exit fd 2 is restored and the filter, at the end of its
    pipe, drains and ends (waited for up to 10 s: a child process still holding the pipe keeps
    it open). No-op for None or 0 (nothing to hide).
    """
    if not level:
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    original = os.dup(2)
    try:
        command = [sys.executable, "-I", "-S", os.path.abspath(__file__), str(level)]
        # Its own session: a terminal's Ctrl-C or a signal to the process group leaves it
        # running until the pipe ends, so the command's last lines still come through.
        copier = subprocess.Popen(command, stdin=read_end, stdout=original, start_new_session=True)
    except OSError:  # no interpreter to start: unfiltered rather than no command
        for fd in (read_end, write_end, original):
            os.close(fd)
        yield
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes this process's last write end of the pipe
        os.close(original)
        with contextlib.suppress(subprocess.TimeoutExpired):
            copier.wait(timeout=10)


def _reads(fd, size=65536):
    """The lines (bytes) read from `fd`, grouped as the reads brought them: a group ends with a
    read that ends at a line's end, so a write cut between two reads stays one group."""
    group, pending = [], b""
    while chunk := os.read(fd, size):
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()  # after the last newline: b"" when the read ended on one
        group.extend(part + b"\n" for part in parts)
        if not pending and group:
            yield group
            group = []
    if group or pending:
        yield group + ([pending] if pending else [])


if __name__ == "__main__":  # the filter process of `filtered_stderr`
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = sys.stdout.buffer
    for kept in filter_writes(_reads(0), int(sys.argv[1])):
        out.write(kept)
        out.flush()
