"""A cluster's preemption (SIGTERM) as a stop request that training honours.

The entry point owns the request: its SIGTERM handler carries one as `stop` (the `tfresnet`
command's does) and sets it; training is handed one, or takes the installed handler's
(`installed`). Nothing heavy is imported, so a handler can use it at any instant, even while
TensorFlow is still importing. (TF's `PreemptionCheckpointHandler` supports only multi-worker
and TPU strategies and saves its own checkpoint, not the run's epoch commit.)
"""

import signal
import threading


class StopRequest:
    """`requested`: set it (e.g. from a SIGTERM handler) and training backs up after its current
    call (a few steps) and stops, every worker at the same step. `in_training`: set while a
    training loop that honours `requested` runs; a request anywhere else must stop the process
    itself."""

    def __init__(self):
        self.requested = threading.Event()
        self.in_training = threading.Event()


def installed() -> StopRequest:
    """The stop request of the SIGTERM handler the entry point installed (its `stop`); a new one,
    never set, where the handler has none."""
    stop = getattr(signal.getsignal(signal.SIGTERM), "stop", None)
    return stop if isinstance(stop, StopRequest) else StopRequest()
