"""Where a process's wall time goes: `PhaseClock` charges the time since its last mark to a
named phase. The standard library only, so the PyTorch peers use it too.

`benchmarks/timed_train.py` marks a tfresnet training with it (start-up, set-up, first step,
steady training, evaluation, epoch-end writes, the finish); the end-to-end and A/B drivers read
the phases it prints.
"""

import os
import time


def process_age() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included), from
    /proc; None where /proc is missing."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, in clock ticks since boot) comes after the parenthesised name.
            started = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))


class PhaseClock:
    """Seconds per phase, in the order the phases first happened.

    Made at a program's start, it first charges the process's age so far to `startup_s`.
    """

    def __init__(self, count_startup: bool = True):
        age = process_age() if count_startup else None
        self.phases: dict[str, float] = {"startup_s": age} if age is not None else {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """Charge the time since the last mark to `phase`."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now

    def summary(self) -> dict[str, float]:
        """The phases rounded to milliseconds, with their `total_s`."""
        out = {k: round(v, 3) for k, v in self.phases.items()}
        out["total_s"] = round(sum(self.phases.values()), 3)
        return out
