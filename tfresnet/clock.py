"""Where a training process's wall time goes: start-up, data, model, training, evaluation, writes.

`PhaseClock` charges the time since its last mark to a named phase; `train` and `fit_model` mark
their steps and the epoch callbacks split `model.fit` into first step, steady training,
evaluation and bookkeeping. `results.json` keeps the phases of the process that finished the
run (`timings`), which is what the end-to-end benchmark's breakdown reads.
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

    Made at an entry point, it first charges the process's age so far to `startup_s`.
    """

    def __init__(self, count_startup: bool = True):
        age = process_age() if count_startup else None
        self.phases: dict[str, float] = {"startup_s": age} if age is not None else {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """Charge the time since the last mark to `phase`."""
        now = time.perf_counter()
        self.add(phase, now - self._last)
        self._last = now

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def move(self, source: str, target: str, seconds: float) -> None:
        """Re-charge `seconds` of `source` to `target` (a part measured inside a larger mark)."""
        seconds = min(seconds, self.phases.get(source, 0.0))
        self.add(source, -seconds)
        self.add(target, seconds)

    def summary(self) -> dict[str, float]:
        """The phases rounded to milliseconds, with their `total_s`."""
        out = {k: round(v, 3) for k, v in self.phases.items()}
        out["total_s"] = round(sum(self.phases.values()), 3)
        return out
