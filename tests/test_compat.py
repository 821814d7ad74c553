"""Tests for tfresnet.compat: each upstream bug it works around is still there, each patch works,
and each guard leaves the library alone where the probe finds no bug.

The `test_upstream_still_*` tests assert the bug in the installed Keras, TensorFlow or
KerasTuner. When one fails after an upgrade, upstream has fixed it: delete the patch (and its
probe and test) from compat.py.
"""

import json
import os
import subprocess
import sys
import textwrap
import types
import uuid

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import compat, distribute, files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------
# The bugs, still upstream (each test fails once upstream fixes its bug)
# --------------------------------------------------------------------------


def test_upstream_still_recurses_per_layer_of_a_functional_model():  # keras#15596
    before = sys.getrecursionlimit()
    assert compat.keras_recurses_per_layer()
    assert sys.getrecursionlimit() == before


def test_upstream_still_builds_from_a_reduced_first_batch():  # keras#20585, TF #72388
    assert compat.keras_reduces_first_batch()


def test_upstream_still_reduces_the_step_logs_along_axis_0():  # keras#20585
    assert compat.keras_reduces_logs_along_axis0()


@pytest.mark.slow  # a fresh process with a 1-worker MultiWorkerMirroredStrategy: ~10 s
def test_upstream_still_takes_sigterm_from_python_and_reclaim_gives_it_back():
    """MultiWorkerMirroredStrategy's start leaves Python's SIGTERM handler named but never run;
    `reclaim_sigterm` makes it run again."""
    code = textwrap.dedent(
        """
        import json, os, signal, socket, time
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        task = {"type": "worker", "index": 0}
        cluster = {"worker": [f"127.0.0.1:{port}"]}
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        got = []
        signal.signal(signal.SIGTERM, lambda *_: got.append(1))
        import tensorflow as tf
        from tfresnet import compat
        tf.distribute.MultiWorkerMirroredStrategy()
        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.5)
        taken = not got
        compat.reclaim_sigterm()
        os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.5)
        print("taken", taken, "handled", len(got))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=150, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-4:] == ["taken", "True", "handled", "1"]


def test_upstream_still_writes_keras_tuner_state_in_place():
    assert compat.keras_tuner_writes_in_place()


def test_upstream_still_builds_a_model_to_declare_the_space():  # keras-tuner#604
    assert compat.keras_tuner_builds_to_declare_space()


def test_upstream_still_saves_the_best_epoch_in_place():
    assert compat.save_best_epoch_writes_in_place()


def test_upstream_grid_oracle_still_forgets_its_position():  # keras-tuner#1055
    assert compat.grid_oracle_forgets_its_position()


# --------------------------------------------------------------------------
# The patches work
# --------------------------------------------------------------------------


def test_upstream_custom_gradient_still_pins_its_graph():  # tensorflow#27492, #97697
    assert compat.custom_gradient_pins_graphs()


def test_released_custom_gradients_lets_a_trained_models_graphs_go():
    """Two fits under a one-device strategy (Keras all-reduces the gradients, a custom gradient):
    inside the block each fit's train-step graph stays alive; after it, none does."""
    from tensorflow.python.framework import func_graph

    def live_step_graphs():
        import gc

        gc.collect()
        return sum(
            isinstance(o, func_graph.FuncGraph) and o.name.startswith("one_step_on_data")
            for o in gc.get_objects()
        )

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    before = live_step_graphs()
    with compat.released_custom_gradients():
        for _ in range(2):
            with strategy.scope():
                model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
                model.compile(optimizer="sgd", loss="mse")
            model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
            del model
        assert live_step_graphs() - before == 2  # what a search of many trials kept
    assert live_step_graphs() == before


def test_recursion_headroom_raises_the_limit_inside_and_restores_it():
    before = sys.getrecursionlimit()
    with compat.recursion_headroom(before + 5000):
        assert sys.getrecursionlimit() == before + 5000
    assert sys.getrecursionlimit() == before
    with compat.recursion_headroom(10):  # never lowered
        assert sys.getrecursionlimit() == before
    with pytest.raises(KeyError), compat.recursion_headroom(before + 1):
        raise KeyError("restored on an exception too")
    assert sys.getrecursionlimit() == before


def test_replica_axis_wrapper_adds_a_leading_axis_of_one():
    step = compat.with_replica_axis(lambda data: {"loss": 2.0, "per_class": tf.ones(3)})
    logs = step(None)
    assert logs["loss"].shape == (1,) and float(logs["loss"][0]) == 2.0
    assert logs["per_class"].shape == (1, 3)


def test_keras_tuners_state_and_checkpoints_are_replaced_whole_on_ram():
    """ram://, like a killed in-place write, keeps stale bytes when a file is overwritten (its
    overwrite appends): KerasTuner's own saves would leave unreadable JSON and stale weights."""
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    folder = f"ram://{uuid.uuid4().hex[:8]}"
    compat.write_state(f"{folder}/oracle.json", {"trials": list(range(20))})
    compat.write_state(f"{folder}/oracle.json", {"trials": [], "score": float("nan")})
    state = json.loads(files.read_text(f"{folder}/oracle.json"))
    assert state["trials"] == [] and state["score"] != state["score"]  # NaN, as KerasTuner wrote

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    callback = SaveBestEpoch(keras_tuner.Objective("val_loss", "min"), f"{folder}/c.weights.h5")
    callback = compat.checkpoint_atomically(callback, distribute.make_strategy("one_device"))
    callback.set_model(model)
    for epoch, loss in enumerate([2.0, 1.0]):  # two better epochs: two saves
        model.set_weights([np.full_like(w, epoch + 1.0) for w in model.get_weights()])
        callback.on_epoch_end(epoch, {"val_loss": loss})
    reloaded = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    reloaded.load_weights(f"{folder}/c.weights.h5")
    assert all(float(np.min(w)) == 2.0 for w in reloaded.get_weights())
    assert sorted(n.rstrip("/") for n in tf.io.gfile.listdir(folder)) == [
        "c.weights.h5",
        "oracle.json",
    ]  # no temporary file left


def test_the_oracle_writes_its_state_whole(tmp_path):
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    oracle._set_project_dir(str(tmp_path), "search")
    assert compat.write_oracle_state_atomically(oracle)
    path = oracle._get_oracle_fname()
    files.write_text(path, "old")
    os.link(path, tmp_path / "link")
    oracle.save()
    assert (tmp_path / "link").read_text() == "old"  # replaced, not rewritten in place
    assert json.loads(files.read_text(path))["ongoing_trials"] == {}


# --------------------------------------------------------------------------
# The guards: where a probe finds no bug, nothing is patched
# --------------------------------------------------------------------------


def test_no_patch_where_the_probes_find_no_bug(monkeypatch, tmp_path):
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    for probe in (
        "keras_reduces_first_batch",
        "keras_reduces_logs_along_axis0",
        "keras_tuner_writes_in_place",
        "save_best_epoch_writes_in_place",
    ):
        monkeypatch.setattr(compat, probe, lambda: False)
    model = types.SimpleNamespace(_maybe_symbolic_build=print, train_step=len, test_step=len)
    assert not compat.build_from_local_batch(model) and not compat.add_replica_axis(model)
    assert (model._maybe_symbolic_build, model.train_step, model.test_step) == (print, len, len)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    assert not compat.write_oracle_state_atomically(oracle)
    assert "save" not in vars(oracle) and "_save_trial" not in vars(oracle)
    callback = SaveBestEpoch(keras_tuner.Objective("val_loss", "min"), f"{tmp_path}/c.weights.h5")
    assert compat.checkpoint_atomically(callback, None) is callback
    assert "_save_model" not in vars(callback)


def test_nothing_is_patched_at_import():
    """Importing the package leaves every class compat patches instances of as upstream wrote it."""
    from keras_tuner.src.engine.base_tuner import BaseTuner
    from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

    import tfresnet.tuning  # noqa: F401 -- the modules that use compat

    methods = [
        keras.Model._maybe_symbolic_build,
        keras.Model.train_step,
        keras.Model.test_step,
        keras_tuner.Oracle.save,
        keras_tuner.Oracle._save_trial,
        keras_tuner.oracles.GridSearchOracle.set_state,
        BaseTuner.save,
        BaseTuner._populate_initial_space,
        SaveBestEpoch._save_model,
    ]
    assert [m.__module__.split(".")[0] for m in methods] == [
        "keras", "keras", "keras", *["keras_tuner"] * 6
    ]  # fmt: skip
