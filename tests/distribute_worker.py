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

    from tfresnet.distribute import data_sharding_options

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    return ds.with_options(data_sharding_options())


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


def scenario_file_shards(out_dir):
    """One worker of 2 reading the tfds set the test wrote in OUT_DIR/tfds (several files):
    the labels its training input gives it over 2 epochs, the same input resumed at epoch 1
    step 2, then `train.fit_model` for 2 epochs on it."""
    import keras
    import tensorflow as tf

    from tfresnet import data, distribute, pipeline, train

    strategy = distribute.make_strategy("multi_worker")
    task = strategy.cluster_resolver.task_id
    tfds_dir = os.path.join(out_dir, "tfds")
    name = next(n for n in sorted(os.listdir(tfds_dir)) if n != "downloads")  # the only set
    d = data.load_data(name, data_dir=tfds_dir)
    steps = d.info.sizes["train"] // BATCH

    def stream(first_epoch=0, skip_batches=0):
        """(labels, image sums) of each step on this worker, epochs first_epoch..1."""
        ds = pipeline.training_input(
            d, strategy, batch_size=BATCH, steps_per_epoch=steps, seed=0,
            first_epoch=first_epoch, epochs=2, skip_batches=skip_batches,
        )  # fmt: skip
        out, iterator = [], iter(ds)
        for _ in range((2 - first_epoch) * steps - skip_batches):
            images, labels = (strategy.experimental_local_results(v)[0] for v in next(iterator))
            out.append((labels.numpy().tolist(), float(tf.reduce_sum(images))))
        return ds, out

    ds, steps_seen = stream()
    _, resumed = stream(first_epoch=1, skip_batches=2)
    keras.utils.set_random_seed(0)
    config = train.TrainConfig(
        model="cifar_resnet8", dataset=name, data_dir=tfds_dir, epochs=2, batch_size=BATCH,
        strategy="multi_worker", run_dir=os.path.join(out_dir, "run"), export=False, verbose=0,
        eval_test_each_epoch=False,
    )  # fmt: skip
    _, results = train.fit_model(config, strategy=strategy, data=d, evaluate_test=False)
    policy = distribute.shard_policy(d.train_files.num_files, distribute.input_pipelines(strategy))
    _write_json(
        out_dir,
        f"shards{task}",
        {
            "policy": policy.name,
            "distributed": isinstance(ds, tf.distribute.DistributedDataset),
            "steps": steps,
            "epochs": [
                sum((s[0] for s in steps_seen[e * steps : (e + 1) * steps]), []) for e in range(2)
            ],
            "step_labels": [s[0] for s in steps_seen],
            "step_sums": [s[1] for s in steps_seen],
            "resumed_labels": [s[0] for s in resumed],
            "resumed_sums": [s[1] for s in resumed],
            "loss": results["curves"]["train_loss"],
            "epochs_trained": results["curves"]["epoch"],
        },
    )


SCENARIOS = {
    "mirrored": scenario_mirrored,
    "equivalence": scenario_equivalence,
    "bfloat16": scenario_bfloat16,
    "multi_worker": scenario_multi_worker,
    "file_shards": scenario_file_shards,
}


if __name__ == "__main__":
    scenario, out = sys.argv[1], sys.argv[2]
    if scenario not in SCENARIOS:
        raise SystemExit(f"unknown scenario {scenario!r}; expected one of {sorted(SCENARIOS)}")
    SCENARIOS[scenario](out)
