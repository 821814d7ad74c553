"""Every patch of Keras, TensorFlow and KerasTuner internals that tfresnet needs, in one place.

Each names its upstream issue, the versions it was seen in (Keras 3.15.1, TensorFlow 2.21.0,
KerasTuner 1.4.8) and a guard: a probe of the installed library, so the patch turns itself off
once upstream is fixed (tests/test_compat.py asserts each bug is still there). Nothing is patched
at import: each patch changes one object inside the call that needs it, or is restored on exit.
Only Keras is imported at module level (the model code, which runs without TF, uses it).
"""

import contextlib
import functools
import json
import os
import signal
import sys
import tempfile
import threading
import types
import warnings
from collections.abc import Callable, Iterator

import keras

# Keras walks a functional graph recursively: keras-team/keras#15596 (tf.keras, closed; no Keras 3
# issue found); Keras 3.15 still recurses when it makes or reloads a model. Guard: the limit is
# raised only where it is lower than needed; `keras_recurses_per_layer` probes the bug.


def recursion_headroom(frames: int) -> contextlib.AbstractContextManager[None]:
    """Python's recursion limit raised to at least `frames` inside the block, then restored
    (ResNet-1202 needs about 50 frames a layer of depth, more than Python's default 1000)."""
    return _recursion_limit(max(sys.getrecursionlimit(), int(frames)))


def keras_recurses_per_layer(headroom: int = 100) -> bool:
    """Probe: with `headroom` frames above the caller's, Keras makes and reloads a functional chain
    of 10 Dense layers, but not one of 150 (the frames it needs grow with the depth)."""
    return _chain_fits(10, headroom) and not _chain_fits(150, headroom)


def _chain_fits(layers, headroom):
    inputs = keras.Input((1,))
    x = inputs
    for _ in range(layers):
        x = keras.layers.Dense(1)(x)
    config = keras.Model(inputs, x).get_config()
    with _recursion_limit(_stack_depth() + headroom):
        try:
            keras.Model(inputs, x)
            keras.Model.from_config(config)
        except RecursionError:
            return False
    return True


def _stack_depth():
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


@contextlib.contextmanager
def _recursion_limit(limit):
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


# Keras 3's TF trainer under MultiWorkerMirroredStrategy and TPUStrategy: keras-team/keras#20585
# and tensorflow/tensorflow#72388 (the axis-0 error; TF's maintainers sent it to Keras)


def build_from_local_batch(model) -> bool:
    """Fix 1: Keras builds the model before the first step from `strategy.reduce("MEAN",
    first_batch)`; MWMS cannot reduce eagerly ("Attempt to convert a value (PerReplica ...)") and
    TPUStrategy's reduce scales int labels by 1/n (a TypeError). The build needs only shapes and
    dtypes: this model builds from this worker's first replica batch instead. Guard:
    `keras_reduces_first_batch()`. Patches this model instance only; True if patched."""
    if not keras_reduces_first_batch() or not hasattr(model, "_maybe_symbolic_build"):
        return False
    strategy = model.distribute_strategy
    keras_build = model._maybe_symbolic_build

    @functools.wraps(keras_build)
    def build(iterator=None, data_batch=None, **kwargs):
        if iterator is not None and data_batch is None:
            data_batch = first_local_batch(iterator, strategy)
            iterator = None
        return keras_build(iterator=iterator, data_batch=data_batch, **kwargs)

    model._maybe_symbolic_build = build
    return True


def first_local_batch(epoch_iterator, strategy):
    """First batch of a Keras epoch iterator, on this worker's first replica."""
    import tensorflow as tf

    for item in epoch_iterator:
        batch = next(item[-1])  # Keras yields (begin_step, end_step, iterator)
        return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
    raise ValueError("The training data is empty: no batch to build the model from.")


@functools.cache
def keras_reduces_first_batch() -> bool:
    """Probe: does Keras' TF trainer build from `strategy.reduce` of the first batch? Runs its
    `_maybe_symbolic_build` on a stand-in whose strategy records what it is asked."""
    import tensorflow as tf
    from tensorflow.python.distribute import values

    calls = []
    probe = types.SimpleNamespace(
        reduce=lambda op, value, axis=None: calls.append(op) or value,
        scope=contextlib.nullcontext,
    )
    stand_in = types.SimpleNamespace(
        _distribute_strategy=probe, distribute_strategy=probe, _symbolic_build=lambda **_: None
    )
    try:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        batch = values.PerReplica((tf.constant([1]),))
        TensorFlowTrainer._maybe_symbolic_build(stand_in, iterator=[(0, 0, iter([batch]))])
    except Exception as err:  # Keras moved things: report, and keep the fix (it is harmless).
        warnings.warn(f"Could not probe Keras _maybe_symbolic_build ({err!r}).", stacklevel=3)
        return True
    return bool(calls)


def add_replica_axis(model) -> bool:
    """Fix 2: under MWMS Keras reduces the scalar step logs with `strategy.reduce("MEAN", v,
    axis=0)` ("Invalid reduction dimension 0 for input with 0 dimensions"). Each log gets a
    leading axis of length 1, so that reduction becomes the mean over replicas, as meant. Guard:
    `keras_reduces_logs_along_axis0()`. Patches this model instance only; True if patched."""
    if not keras_reduces_logs_along_axis0():
        return False
    model.train_step = with_replica_axis(model.train_step)
    model.test_step = with_replica_axis(model.test_step)
    return True


def with_replica_axis(step: Callable) -> Callable:
    """Wrap a train/test step so each output gets a leading axis of length 1."""
    import tensorflow as tf

    @functools.wraps(step)
    def step_with_replica_axis(data):
        logs = step(data)
        return tf.nest.map_structure(lambda v: tf.expand_dims(tf.convert_to_tensor(v), 0), logs)

    return step_with_replica_axis


@functools.cache
def keras_reduces_logs_along_axis0() -> bool:
    """Probe: does Keras' `reduce_per_replica` reduce a scalar log with axis=0 under MWMS? Asks
    it with a stand-in strategy (never initialized) that records the axes it is given."""
    import tensorflow as tf

    class ReduceProbe(tf.distribute.MultiWorkerMirroredStrategy):
        def __init__(self):  # no cluster set-up
            self.axes = []

        @property
        def extended(self):  # the one question Keras asks: multi-worker mode?
            return types.SimpleNamespace(_in_multi_worker_mode=lambda: True)

        def reduce(self, reduce_op, value, axis=None):
            self.axes.append(axis)
            return value

    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer

        probe = ReduceProbe()
        tf_trainer.reduce_per_replica(tf.constant(0.0), probe, "auto")
    except Exception as err:  # Keras moved things: report, do not patch.
        warnings.warn(f"Could not probe Keras reduce_per_replica ({err!r}).", stacklevel=3)
        return False
    return probe.axes == [0]


# TensorFlow takes SIGTERM (no upstream issue found; by design, for its own preemption handling):
# MultiWorkerMirroredStrategy's start (the coordination service's preemption notifier) installs
# a C++ handler that only records the signal, so a Python handler never runs though
# `signal.getsignal` still names it. Guard: re-installing Python's handler changes nothing where
# TF took nothing.


def reclaim_sigterm() -> None:
    """Give SIGTERM back to the handler Python had installed (or the default that ends the
    process). Only the main thread may set handlers; a handler set outside Python stays."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


# KerasTuner writes its state in place (no upstream issue on it; searches that cannot reload after
# a kill: keras-team/keras-tuner#987): a kill in mid-write leaves half of oracle.json, trial.json
# or <tuner>.json, which the next run cannot reload. Guard: `keras_tuner_writes_in_place()`.


def write_state(path: str, state) -> None:
    """KerasTuner's JSON (NaN allowed: it reads its own files back), written atomically."""
    from tfresnet import files

    files.write_text(path, json.dumps(state))


def write_oracle_state_atomically(oracle) -> bool:
    """Make this oracle write oracle.json and each trial.json whole (this instance only); True if
    patched."""
    if not keras_tuner_writes_in_place():
        return False
    oracle.save = lambda: write_state(oracle._get_oracle_fname(), oracle.get_state())
    oracle._save_trial = lambda trial: write_state(
        os.path.join(oracle._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state()
    )
    return True


@functools.cache
def keras_tuner_writes_in_place() -> bool:
    """Probe: does KerasTuner's `Stateful.save` overwrite a file in place (`_rewrites_in_place`)?"""
    from keras_tuner.src.engine.stateful import Stateful

    stand_in = types.SimpleNamespace(get_state=lambda: {"new": True})
    return _rewrites_in_place(lambda path: Stateful.save(stand_in, path), ".json")


def _rewrites_in_place(write, suffix):
    """Whether `write(path)` over an existing file changes what a hard link to it holds (it does
    only where the file was rewritten in place)."""
    with tempfile.TemporaryDirectory(prefix="tfresnet-probe-") as folder:
        path, link = os.path.join(folder, "state" + suffix), os.path.join(folder, "link")
        with open(path, "wb") as f:
            f.write(b"old")
        try:
            os.link(path, link)
        except OSError:  # no hard links here: cannot tell, so keep the (harmless) patch
            return True
        write(path)
        with open(link, "rb") as f:
            return f.read() != b"old"


class KerasTunerFixes:
    """Mixin for a KerasTuner tuner: its state written whole (`write_oracle_state_atomically`),
    and its space declared without building a model: KerasTuner builds one to discover
    conditional hyperparameters even when `declare_hyperparameters` declared them all, which
    starts TF before a mirrored strategy can split the CPU. Overriding `_populate_initial_space`
    is the maintainers' advice (keras-team/keras-tuner#604). Guard:
    `keras_tuner_builds_to_declare_space()`."""

    def __init__(self, *args, **kwargs):
        import keras_tuner

        super().__init__(*args, **kwargs)
        if isinstance(self.oracle, keras_tuner.Oracle):  # a worker holds a client of the chief's
            write_oracle_state_atomically(self.oracle)

    def save(self):
        """KerasTuner's `BaseTuner.save`, with this tuner's own state written atomically."""
        if not keras_tuner_writes_in_place():
            return super().save()
        if not self._is_worker():
            self.oracle.save()
        write_state(self._get_tuner_fname(), self.get_state())

    def _populate_initial_space(self):
        if not keras_tuner_builds_to_declare_space():
            return super()._populate_initial_space()
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)


@functools.cache
def keras_tuner_builds_to_declare_space() -> bool:
    """Probe: does `BaseTuner._populate_initial_space` build the model after
    `declare_hyperparameters`? Runs it on a stand-in tuner that records builds."""
    import keras_tuner
    from keras_tuner.src.engine.base_tuner import BaseTuner

    builds = []
    stand_in = types.SimpleNamespace(
        hypermodel=types.SimpleNamespace(
            declare_hyperparameters=lambda hp: hp.Fixed("x", 1), build=builds.append
        ),
        oracle=types.SimpleNamespace(
            get_space=keras_tuner.HyperParameters, update_space=lambda hp: None
        ),
    )
    stand_in._activate_all_conditions = lambda: BaseTuner._activate_all_conditions(stand_in)
    BaseTuner._populate_initial_space(stand_in)
    return bool(builds)


# KerasTuner's `SaveBestEpoch` checkpoint is saved in place (no upstream issue found); Hyperband
# continues a trial from it, so a kill in mid-save would leave a trial that cannot continue.
# Guard: `save_best_epoch_writes_in_place()`.


def checkpoint_atomically(callback, strategy):
    """A KerasTuner `SaveBestEpoch` callback made to save whole or not at all (every worker
    saves, the chief's counts); other callbacks, or where the guard finds no bug, as they are."""
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    if not isinstance(callback, SaveBestEpoch) or not save_best_epoch_writes_in_place():
        return callback
    from tfresnet import distribute, files

    def save_model():
        with distribute.writable_dir(os.path.dirname(callback.filepath), strategy) as folder:
            target = files.join(folder, os.path.basename(callback.filepath))
            files.save_weights(callback.model, target)

    callback._save_model = save_model
    return callback


@functools.cache
def save_best_epoch_writes_in_place() -> bool:
    """Probe: does `SaveBestEpoch` overwrite its weights file in place (`_rewrites_in_place`)?"""
    import keras_tuner
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def save(path):
        callback = SaveBestEpoch(keras_tuner.Objective("loss", "min"), path)
        callback.set_model(model)
        callback.on_epoch_end(0, {"loss": 1.0})

    return _rewrites_in_place(save, ".weights.h5")


# TensorFlow's `tf.custom_gradient` in graph mode registers each use's gradient under a new name
# in the global gradient registry and never removes it; its closure holds the traced graph, so
# every traced train step stays in memory (tensorflow/tensorflow#27492, #97697; TF 2.21.0): Keras'
# optimizer sums gradients with `ReplicaContext.all_reduce`, such a custom gradient, so every
# trial of a search pinned its graph. keras-team/tf-keras#898 proposes the same purge in
# `clear_session`. Guard: `custom_gradient_pins_graphs()`.
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


@contextlib.contextmanager
def released_custom_gradients() -> Iterator[None]:
    """Drop, on exit, the custom gradients registered inside the block (and so the graphs they
    hold). For code whose traced functions are all dead at the end of the block: one trial."""
    if not custom_gradient_pins_graphs():
        yield
        return
    registry = _gradient_registry()
    before = set(registry)
    try:
        yield
    finally:
        for name in [n for n in registry if n not in before]:
            if name.startswith(CUSTOM_GRADIENT_PREFIX):
                del registry[name]
        import gc

        gc.collect()


def _gradient_registry() -> dict:
    from tensorflow.python.framework import ops

    return ops._gradient_registry._registry


@functools.cache
def custom_gradient_pins_graphs() -> bool:
    """Probe: does a graph that used `tf.custom_gradient` stay alive once dropped?"""
    import gc
    import weakref

    import tensorflow as tf

    @tf.custom_gradient
    def double(x):
        return 2 * x, lambda dy: 2 * dy

    @tf.function
    def step(x):
        return double(x)

    registry = _gradient_registry()
    before = set(registry)
    concrete = step.get_concrete_function(tf.TensorSpec([], tf.float32))
    graph = weakref.ref(concrete.graph)
    del step, concrete
    gc.collect()
    pinned = graph() is not None
    for name in set(registry) - before:  # the probe's own
        del registry[name]
    gc.collect()
    return pinned


# KerasTuner's grid oracle does not save where it is in the grid (keras-team/keras-tuner#1055,
# open; KerasTuner 1.4.8): a reloaded search stops early, or dies with a KeyError once an
# interrupted trial finishes. Guard: a KerasTuner that restores the position itself is left alone
# (`grid_oracle_forgets_its_position` probes it).
def _resumable_grid_search_oracle():
    import keras_tuner

    class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
        """KerasTuner's grid oracle; on reload its position is rebuilt from the trials: every
        trial, in grid order, may yield its successor."""

        def set_state(self, state):
            super().set_state(state)
            if self._ordered_ids._data_to_index:  # a KerasTuner that restores it itself
                return
            order = sorted(
                self.trials,
                key=functools.cmp_to_key(
                    lambda a, b: self._compare(
                        self.trials[a].hyperparameters.values,
                        self.trials[b].hyperparameters.values,
                    )
                ),
            )
            for trial_id in order:
                self._ordered_ids.insert(trial_id)
            self._populate_next = list(order)

    ResumableGridSearchOracle.__qualname__ = "ResumableGridSearchOracle"
    return ResumableGridSearchOracle


def grid_oracle_forgets_its_position() -> bool:
    """Probe: after `set_state(get_state())`, has a new grid oracle lost the old one's position?"""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Choice("x", [1, 2])
    old = keras_tuner.oracles.GridSearchOracle(hyperparameters=hp)
    old._ordered_ids.insert("0")
    new = keras_tuner.oracles.GridSearchOracle(hyperparameters=hp)
    new.set_state(old.get_state())
    return not new._ordered_ids._data_to_index


def __getattr__(name):
    """`ResumableGridSearchOracle`, made on first use: KerasTuner is imported only then."""
    if name == "ResumableGridSearchOracle":
        cls = _resumable_grid_search_oracle()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
