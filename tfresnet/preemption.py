"""A cluster's preemption (SIGTERM): the stop request that training honours.

Two flags, in a module that imports nothing heavy, so that a SIGTERM handler can use them at
any instant, even while TensorFlow and Keras are still importing (the `tfresnet` command
installs its handler before anything else). `tfresnet.rundir` trains with them.
"""

import threading

# Set it (e.g. from a SIGTERM handler): training backs up after its current call (a few steps)
# and stops; under multi-worker training every worker stops at the same step.
STOP_REQUESTED = threading.Event()
# Set while an EpochRecorder's training loop runs, the only place that honours STOP_REQUESTED:
# a stop request anywhere else has to stop the process itself.
IN_TRAINING = threading.Event()
