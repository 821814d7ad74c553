"""Subprocess side of tests/test_distribute.py: one scenario per run.

Distributed set-ups must be chosen before TensorFlow starts (logical CPUs,
MultiWorkerMirroredStrategy), so each scenario runs in a fresh process:

    python tests/distribute_worker.py SCENARIO OUT_DIR

and writes OUT_DIR/<name>.json (numbers the test asserts) plus, for the
multi-worker scenarios, the final weights as OUT_DIR/weights<task>.npz.
The toy model and data are also imported by the test for reference runs.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BATCH = 8  # global batch: 4 per replica on 2 replicas
NUM_EXAMPLES = 32
NUM_CLASSES = 3


def toy_data(n=NUM_EXAMPLES):
    """Fixed random 8x8x3 images and labels (the same in every process)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=(n,)).astype("int32")
    return x, y


def toy_dataset(x, y, batch=BATCH):
    """Unshuffled batches with DATA sharding, as our trainer feeds arrays."""
    import tensorflow as tf

    from tfresnet.distribute import distribute_dataset_options

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    return ds.with_options(distribute_dataset_options("memory"))


def toy_model(synchronized=True, lr=0.1):
    """Conv2D+BN+GAP+Dense on 8x8 inputs, seeded so every process agrees."""
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(
        4, 3, padding="same", kernel_initializer=keras.initializers.GlorotUniform(1)
    )(inputs)
    x = keras.layers.BatchNormalization(synchronized=synchronized)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        NUM_CLASSES,
        kernel_initializer=keras.initializers.GlorotUniform(2),
        dtype="float32",
    )(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # the same kernels in every process, GPU or not
    )
    return model


def fit_toy(model, epochs=2, callbacks=None):
    """The short fit every scenario (and the in-process reference) runs."""
    x, y = toy_data()
    history = model.fit(
        toy_dataset(x, y), epochs=epochs, verbose=0, callbacks=callbacks, shuffle=False
    )
    return history.history


def _max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


def _write_json(out_dir, name, result):
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(result, f)


def scenario_mirrored(out_dir):
    """2 logical CPUs: fit, evaluate, predict, save and reload."""
    import keras

    from tfresnet.distribute import make_strategy

    strategy = make_strategy("mirrored", num_replicas=2)
    with strategy.scope():
        model = toy_model()
    history = fit_toy(model)
    x, y = toy_data()
    evaluation = model.evaluate(toy_dataset(x, y), verbose=0, return_dict=True)
    predictions = model.predict(x, batch_size=BATCH, verbose=0)
    direct = model(x, training=False).numpy()
    path = os.path.join(out_dir, "toy.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    with strategy.scope():
        reloaded_in_scope = keras.models.load_model(path)
    reloaded_eval = reloaded_in_scope.evaluate(toy_dataset(x, y), verbose=0, return_dict=True)
    _write_json(
        out_dir,
        "mirrored",
        {
            "replicas": strategy.num_replicas_in_sync,
            "devices": list(strategy.extended.worker_devices),
            "loss": history["loss"],
            "evaluate": evaluation,
            "predict_shape": list(predictions.shape),
            "predict_vs_direct": float(np.max(np.abs(predictions - direct))),
            "reload_vs_model": float(np.max(np.abs(reloaded.predict(x, verbose=0) - predictions))),
            "reload_in_scope_evaluate": reloaded_eval,
        },
    )


def scenario_equivalence(out_dir):
    """3 SGD steps: 2 replicas x 4 vs 1 replica x 8, synchronized BN."""
    import tensorflow as tf

    from tfresnet.distribute import make_strategy

    results = {}
    for name, strategy in [
        ("two", make_strategy("mirrored", num_replicas=2)),
        ("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
    ]:
        with strategy.scope():
            model = toy_model()
        x, y = toy_data(n=3 * BATCH)
        history = model.fit(toy_dataset(x, y), epochs=1, verbose=0, shuffle=False)
        results[name] = (model.get_weights(), history.history["loss"])
    (w2, loss2), (w1, loss1) = results["two"], results["one"]
    _write_json(
        out_dir,
        "equivalence",
        {
            "max_weight_diff": _max_diff(w2, w1),
            "max_weight_change": _max_diff(w1, _initial_weights()),
            "loss_two": loss2,
            "loss_one": loss1,
        },
    )


def _initial_weights():
    return toy_model().get_weights()


def scenario_bfloat16(out_dir):
    """mixed_bfloat16 under 2-replica mirrored: fit runs and stays finite."""
    import keras

    from tfresnet.distribute import make_strategy

    strategy = make_strategy("mirrored", num_replicas=2)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    with strategy.scope():
        model = toy_model()
    history = fit_toy(model)
    x, _ = toy_data()
    conv = model.layers[1]
    _write_json(
        out_dir,
        "bfloat16",
        {
            "loss": history["loss"],
            "conv_compute_dtype": conv.compute_dtype,
            "conv_variable_dtype": conv.kernel.dtype,
            "conv_output_dtype": str(conv(x[:1]).dtype),
            "prediction_dtype": str(model.predict(x, verbose=0).dtype),
        },
    )


def scenario_multi_worker(out_dir):
    """One worker of a TF_CONFIG cluster: fit, evaluate, predict, export."""
    from tfresnet.distribute import (
        make_strategy,
        multi_worker_compatible,
        writable_dir,
    )

    strategy = make_strategy("multi_worker")
    task = strategy.cluster_resolver.task_id
    with strategy.scope():
        model = multi_worker_compatible(toy_model())
    history = fit_toy(model)
    x, y = toy_data()
    evaluation = model.evaluate(toy_dataset(x, y), verbose=0, return_dict=True)
    predictions = model.predict(x, batch_size=BATCH, verbose=0)
    with writable_dir(os.path.join(out_dir, "export"), strategy) as export_dir:
        model.save(os.path.join(export_dir, "toy.keras"))
    np.savez(os.path.join(out_dir, f"weights{task}.npz"), *model.get_weights())
    np.save(os.path.join(out_dir, f"predictions{task}.npy"), predictions)
    _write_json(
        out_dir,
        f"worker{task}",
        {
            "replicas": strategy.num_replicas_in_sync,
            "is_chief": strategy.extended.should_checkpoint,
            "export_dir": export_dir,
            "export_dir_exists_after": os.path.exists(export_dir),
            "history": history,
            "evaluate": evaluation,
        },
    )


SCENARIOS = {
    "mirrored": scenario_mirrored,
    "equivalence": scenario_equivalence,
    "bfloat16": scenario_bfloat16,
    "multi_worker": scenario_multi_worker,
}


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    if scenario not in SCENARIOS:
        raise SystemExit(f"unknown scenario {scenario!r}; expected one of {sorted(SCENARIOS)}")
    SCENARIOS[scenario](out)
