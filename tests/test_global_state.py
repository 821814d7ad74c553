"""No hidden global state (DESIGN.md): importing tfresnet, building a model and fitting it
leave the process as they found it; seeds, the dtype policy and log settings belong to the
entry points (the CLI, `train()`)."""

import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context  # the eager global seed: no public getter

import tfresnet
from tfresnet import data, pipeline
from tfresnet import train as train_lib


def _process_state():
    """What a library call must leave as it found it: argv, the dtype policy, the recursion
    limit and the global random states (TF's seed and generator, NumPy's). Python's `random` is
    left out: Keras draws each unseeded initializer's seed from it, whoever builds the model."""
    numpy_state = np.random.get_state()
    return {
        "argv": list(sys.argv),
        "dtype policy": keras.mixed_precision.global_policy().name,
        "recursion limit": sys.getrecursionlimit(),
        "tf global seed": context.global_seed(),
        "tf global generator": tf.random.get_global_generator().state.numpy().tolist(),
        "numpy legacy state": (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
    }


def test_build_and_fit_leave_the_process_as_they_found_it(tmp_path):
    sys.setrecursionlimit(sys.getrecursionlimit() + 7)  # an unusual value, to be found again
    tf.random.set_seed(1234)
    np.random.seed(99)
    before = _process_state()
    # A model deep enough that Keras' graph walk needs the raised recursion limit (raised and
    # restored by build_model), and a two-step fit under a mixed policy (set and restored).
    tfresnet.build_model("resnet56", input_shape=(8, 8, 3))
    config = train_lib.TrainConfig(
        model="cifar_resnet8",
        dataset="digits",
        steps=2,
        batch_size=32,
        export=False,
        eval_test_each_epoch=False,
        run_dir=str(tmp_path / "run"),
        verbose=0,
        precision="mixed_bfloat16",
    )
    train_lib.fit_model(config)
    after = _process_state()
    changed = [key for key in before if before[key] != after[key]]
    assert not changed, f"changed by build_model / fit_model: {changed}"


def test_the_training_pipeline_depends_on_its_seed_argument_not_the_global_seed():
    # Its shuffle clears the graph-level seed of its own function graph, for that one call.
    d = data.load_data("digits")
    batches = []
    for global_seed in (0, 7):
        tf.random.set_seed(global_seed)
        before = _process_state()
        ds = pipeline.make_pipeline(d.train, d.info, batch_size=16, training=True, seed=3, epochs=1)
        batches.append(next(iter(ds))[0].numpy())
        assert _process_state() == before
    np.testing.assert_array_equal(*batches)


def _python(code, *argv):
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


IMPORT = (
    "import sys\n"
    "import tfresnet\n"
    "print(sorted({m.split('.')[0] for m in sys.modules} & {'benchmarks', 'keras', 'tensorflow'}))"
)


def test_import_tfresnet_loads_no_benchmark_keras_or_tensorflow_whatever_the_command_line():
    # The package reads no command line: as a notebook's import, and as the `tfresnet` console
    # script's (argv[0] 'tfresnet'), it loads the same modules, and none of the benchmarks.
    assert _python(IMPORT) == "[]"
    as_the_command = "import sys\nsys.argv[0] = '/usr/bin/tfresnet'\n" + IMPORT
    assert _python(as_the_command, "train") == "[]"
