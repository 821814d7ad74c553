"""TensorFlow's native (C++) log lines, hidden by the CLI unless --verbose_logs asks for them
(docs/development.md, "Native log lines"): `configure` sets TF_CPP_MIN_LOG_LEVEL=3 and
GRPC_VERBOSITY=ERROR (unless set) before TensorFlow loads, and `filtered_stderr` pipes fd 2
through a filter process, because lines logged before absl's logging is initialised ignore the
level (abseil/abseil-cpp#1718)."""

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from absl import flags

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


def define_flag(fv: "flags.FlagValues") -> None:
    from absl import flags  # here, not above: the filter process runs this file without absl

    flags.DEFINE_bool(
        "verbose_logs",
        False,
        "Show TensorFlow's native (C++) log lines too (by default the CLI hides them).",
        flag_values=fv,
    )


def configure(argv: list[str], environ: dict | None = None) -> int | None:
    """Set the log environment before TensorFlow is imported, unless `argv` (`tfresnet COMMAND
    [flags]`, parsed by absl) asks for --verbose_logs; the level `filtered_stderr` applies."""
    from absl import flags

    environ = os.environ if environ is None else environ
    fv = flags.FlagValues()
    define_flag(fv)
    with contextlib.suppress(flags.Error):  # a bad value: the command's own parse reports it
        fv(["tfresnet", *argv[2:]], known_only=True)
        if fv.verbose_logs:
            return None
    for key, value in ENVIRONMENT.items():
        environ.setdefault(key, value)
    return level_in_effect(environ)


def level_in_effect(environ: dict | None = None) -> int:
    """The TF_CPP_MIN_LOG_LEVEL TensorFlow applies (0 when unset or not a number), at most 3."""
    text = (os.environ if environ is None else environ).get("TF_CPP_MIN_LOG_LEVEL", "").strip()
    return min(int(text), DEFAULT_LEVEL) if text.isdigit() else 0


def hidden(line: str, level: int) -> bool:
    """Whether `line` is a native log line below `level` (severity index < level)."""
    match = LOG_LINE.match(line)
    if match:
        return SEVERITIES.index(match.group(1)) < level
    return line.startswith(PRE_INIT_NOTICE) and SEVERITIES.index("W") < level


def filter_lines(lines: Iterable, level: int) -> Iterator:
    """The lines (str or bytes) of `lines` that are not hidden at `level`, in order."""
    return filter_writes(([line] for line in lines), level)


def filter_writes(writes: Iterable[list], level: int) -> Iterator:
    """The lines of `writes` (lists of lines, as each read of the pipe brought them) not hidden
    at `level`. Lines read with a hidden one continue it unless plainly Python's; in a later
    read only the `CONTINUATIONS` prefixes do."""
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
def filtered_stderr(level: int | None) -> Iterator[None]:
    """Within the block, fd 2 passes `filter_writes(..., level)` in a filter process (this file
    as a script, standard library only; a process, not a thread: it reads to the end of the pipe
    however the command ends); on exit fd 2 is restored and the filter drains (up to 10 s)."""
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
