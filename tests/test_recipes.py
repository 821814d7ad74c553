import dataclasses

import keras
import numpy as np
import pytest

from tfresnet import recipes

CIFAR = recipes.get_recipe("cifar")


def _lr(schedule, step):
    return float(schedule(step))


def test_cifar_schedule_is_the_papers_at_full_budget():
    schedule = recipes.paper_schedule(CIFAR, 64_000, depth=20)
    assert [_lr(schedule, s) for s in (0, 31_999, 32_001, 47_999, 48_001, 63_999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def test_deep_nets_warm_up_at_001_for_400_iterations():
    schedule = recipes.paper_schedule(CIFAR, 64_000, depth=110)
    assert _lr(schedule, 399) == pytest.approx(0.01)
    assert _lr(schedule, 401) == pytest.approx(0.1)
    assert _lr(recipes.paper_schedule(CIFAR, 64_000, depth=56), 0) == pytest.approx(0.1)


def test_short_budget_scales_every_boundary():
    schedule = recipes.paper_schedule(CIFAR, 640, depth=110)
    assert [_lr(schedule, s) for s in (3, 5, 319, 321, 479, 481)] == pytest.approx(
        [0.01, 0.1, 0.1, 0.01, 0.01, 0.001]
    )


def test_tiny_schedules_keep_boundaries_increasing():
    schedule = recipes.paper_schedule(CIFAR, 2, depth=1202)
    assert list(schedule.boundaries) == sorted(set(schedule.boundaries))


def test_total_steps_from_budget_epochs_or_steps():
    assert recipes.total_steps(CIFAR, steps_per_epoch=351, batch_size=128, budget=1.0) == 64_000
    assert recipes.total_steps(CIFAR, steps_per_epoch=351, batch_size=256, budget=0.5) == 16_000
    assert recipes.total_steps(CIFAR, steps_per_epoch=11, batch_size=128, epochs=30) == 330
    assert recipes.total_steps(CIFAR, steps_per_epoch=11, batch_size=128, steps=7) == 7
    with pytest.raises(ValueError, match="at most one of budget, epochs and steps"):
        recipes.total_steps(CIFAR, steps_per_epoch=1, batch_size=128, epochs=1, steps=1)
    for budget in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="budget must be > 0"):
            recipes.total_steps(CIFAR, steps_per_epoch=1, batch_size=128, budget=budget)


def test_imagenet_schedule_drops_at_30_60_90_of_120_epochs_without_warm_up():
    """Sec. 3.4 at batch 256 (5,005 steps an epoch on 1.28M images): 0.1, divided by 10 at
    150k, 300k and 450k of 600k iterations; no warm-up, however deep."""
    imagenet = recipes.get_recipe("imagenet")
    steps = recipes.total_steps(imagenet, steps_per_epoch=5005, batch_size=256)
    assert steps == 600_000
    assert recipes.total_steps(imagenet, steps_per_epoch=2503, batch_size=512) == 300_000
    schedule = recipes.paper_schedule(imagenet, steps, depth=152)
    probes = (0, 149_999, 150_001, 299_999, 300_001, 449_999, 450_001)
    assert [_lr(schedule, s) for s in probes] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001]
    )


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown recipe 'mnist'; allowed: cifar, imagenet"):
        recipes.get_recipe("mnist")


# --- The fast recipe: each trick's behaviour, and each switched off -------------------------

FAST = recipes.get_recipe("fast")


def test_turning_every_trick_off_gives_the_papers_cifar_recipe_at_the_fast_length():
    off = recipes.tricks(FAST)
    assert off == {
        "zero_init_residual": False,
        "label_smoothing": 0.0,
        "lr_schedule": "steps",
        "warmup_epochs": 0.0,
        "nesterov": False,
        "test_flip": False,
        "batch_size": 128,
        "weight_decay": 1e-4,
    }
    # The test curve is not a trick (it changes no weight): fast leaves it off for time alone.
    paper = dataclasses.replace(
        recipes.with_overrides(FAST, off), batch_size=128, weight_decay=1e-4, learning_rate=0.1,
        eval_test_each_epoch=True,
    )  # fmt: skip
    assert dataclasses.replace(paper, name="cifar", epochs=None) == CIFAR
    # Scaled linearly, the fast recipe's lr at the paper's batch is the paper's 0.1.
    assert FAST.learning_rate * 128 / FAST.batch_size == pytest.approx(CIFAR.learning_rate)


def test_the_fast_recipe_trains_its_own_epochs_and_a_budget_is_a_share_of_them():
    assert recipes.total_steps(FAST, steps_per_epoch=234, batch_size=256) == 12 * 234
    assert recipes.total_steps(FAST, steps_per_epoch=234, batch_size=128, budget=0.5) == 6 * 234
    assert recipes.total_steps(FAST, steps_per_epoch=234, batch_size=256, epochs=3) == 3 * 234


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = recipes.schedule(FAST, 1000, depth=20, steps_per_epoch=100, learning_rate=0.2)
    probes = (0, 50, 100, 550, 1000, 2000)
    assert [_lr(schedule, s) for s in probes] == pytest.approx(
        [0.0, 0.1, 0.2, 0.1, 0.0, 0.0], abs=1e-7
    )
    no_warmup = dataclasses.replace(FAST, warmup_epochs=0.0)
    schedule = recipes.schedule(no_warmup, 1000, depth=20, steps_per_epoch=100, learning_rate=0.2)
    assert [_lr(schedule, s) for s in (0, 500, 1000)] == pytest.approx([0.2, 0.1, 0.0], abs=1e-7)


def test_steps_schedule_is_the_papers():
    steps = dataclasses.replace(FAST, lr_schedule="steps")
    schedule = recipes.schedule(steps, 800, depth=20, steps_per_epoch=100, learning_rate=0.2)
    assert [_lr(schedule, s) for s in (0, 399, 401, 599, 601)] == pytest.approx(
        [0.2, 0.2, 0.02, 0.02, 0.002]
    )


def test_label_smoothing_mixes_the_label_with_a_uniform_target():
    from tfresnet import layers

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
    labels = np.array([0, 2])
    e = 0.1
    nll = -np.log(probs[[0, 1], labels])
    uniform = -np.log(probs).mean(axis=1)
    expected = ((1 - e) * nll + e * uniform).mean()
    loss = recipes.loss(FAST)
    assert isinstance(loss, layers.SparseCrossentropy) and loss.label_smoothing == e
    assert float(loss(labels, probs)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(labels[:, None], probs)) == pytest.approx(expected, rel=1e-5)
    # Off: Keras' own sparse cross-entropy, the paper's loss.
    assert recipes.loss(CIFAR) == "sparse_categorical_crossentropy"
    keras_loss = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    unsmoothed = layers.SparseCrossentropy(0.0)(labels, probs)
    assert float(unsmoothed) == pytest.approx(float(keras_loss), rel=1e-6)
    assert float(keras_loss) == pytest.approx(nll.mean(), rel=1e-5)
    assert layers.SparseCrossentropy.from_config(loss.get_config()).label_smoothing == e


def test_nesterov_and_ema_are_the_optimizers_and_off_in_the_paper():
    fast = recipes.optimizer(FAST, 0.1)
    paper = recipes.optimizer(CIFAR, 0.1)
    assert fast.nesterov and not fast.use_ema
    assert not paper.nesterov and not paper.use_ema and paper.momentum == 0.9
    ema = recipes.optimizer(dataclasses.replace(FAST, ema_momentum=0.9), 0.1)
    assert ema.use_ema and ema.ema_momentum == 0.9


def _digits_info(flip):
    from tfresnet import data as data_lib

    info = data_lib.load_data("digits").info
    return dataclasses.replace(info, flip=flip)


def test_zero_init_residual_makes_every_block_the_identity_at_init():
    from tfresnet import distribute
    from tfresnet import train as train_lib

    info = _digits_info(flip=False)
    strategy = distribute.make_strategy("one_device")
    config = train_lib.TrainConfig(model="cifar_resnet8", recipe="fast")
    model = train_lib.make_model(config, info, strategy)
    gammas = [model.get_layer(f"stage{s}_block1_bn2").gamma for s in (1, 2, 3)]
    assert all(float(np.abs(keras.ops.convert_to_numpy(g)).max()) == 0 for g in gammas)
    # The identity block's output is its input (post-ReLU, so the last ReLU keeps it).
    probe = keras.Model(
        model.inputs,
        [model.get_layer("stem_relu").output, model.get_layer("stage1_block1_out").output],
    )
    x = np.random.default_rng(0).uniform(0, 255, (2, *info.image_shape)).astype("float32")
    before, after = probe(x, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(after), before)
    # Switched off, the paper's initialisation: gamma 1.
    off = dataclasses.replace(config, zero_init_residual=False)
    model = train_lib.make_model(off, info, strategy)
    gamma = model.get_layer("stage1_block1_bn2").gamma
    assert float(np.min(keras.ops.convert_to_numpy(gamma))) == 1.0


def test_flip_averaged_is_the_mean_of_the_two_views():
    from tfresnet import evaluate, models

    model = models.build_model("cifar_resnet8", num_classes=3, input_shape=(8, 8, 1))
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    expected = (model(x) + model(x[:, :, ::-1, :])) / 2
    got = evaluate.flip_averaged(model)(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, model(x))  # the mirror is another view


def test_test_flip_is_off_where_training_does_not_flip_and_refused_if_asked():
    assert recipes.resolve("fast", {}, flips=True).test_flip
    assert not recipes.resolve("fast", {}, flips=False).test_flip
    assert not recipes.resolve("fast", {"test_flip": False}, flips=True).test_flip
    assert recipes.resolve("cifar", {"test_flip": True}, flips=True).test_flip
    for key in ("test_flip", "export_test_flip"):
        with pytest.raises(ValueError, match=f"{key}: this data set.s images are not trained"):
            recipes.resolve("fast", {key: True}, flips=False)


# --- EMA of the weights through a whole run: what is evaluated, saved, and resumed ----------


def _ema_config(tmp_path, name="run", **kwargs):
    from tfresnet.train import TrainConfig

    values = dict(
        model="cifar_resnet8",
        dataset="digits",
        epochs=2,
        batch_size=128,
        export=False,
        run_dir=str(tmp_path / name),
        verbose=0,
        ema_momentum=0.8,
    )
    values.update(kwargs)
    return TrainConfig(**values)


def _weights(path):
    return [keras.ops.convert_to_numpy(w) for w in keras.saving.load_model(path).weights]


def _max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    from tfresnet import train as train_lib

    tmp = tmp_path_factory.mktemp("ema")
    results = train_lib.train(_ema_config(tmp))
    keras.backend.clear_session()
    return tmp / "run", results


def test_ema_weights_are_what_is_evaluated_and_saved(ema_run):
    from tfresnet import data as data_lib
    from tfresnet import pipeline

    run, results = ema_run
    averaged, raw = run / "model.keras", run / "checkpoints" / "last.keras"
    assert _max_difference(_weights(averaged), _weights(raw)) > 1e-3
    data = data_lib.load_data("digits")
    test = pipeline.make_pipeline(data.test, data.info, batch_size=128, training=False)
    losses = {}
    for name, path in (("averaged", averaged), ("raw", raw)):
        model = keras.saving.load_model(path)
        losses[name] = model.evaluate(test, verbose=0, return_dict=True)["loss"]
    assert results["final"]["test_loss"] == pytest.approx(losses["averaged"], rel=1e-5)
    assert losses["raw"] != pytest.approx(losses["averaged"], rel=1e-3)
    assert results["recipe"]["ema_momentum"] == 0.8


@pytest.mark.slow  # two trainings
def test_a_run_with_ema_resumed_mid_epoch_replays_the_uninterrupted_one(tmp_path, ema_run):
    """Keras' fit would put the average into the weights when the first part of the resumed
    epoch ends; the second part must train on from the raw weights, as the reference did."""
    from test_rundir import _stopped_run

    from tfresnet import rundir
    from tfresnet import train as train_lib

    reference, _ = ema_run
    config = _ema_config(tmp_path)
    _stopped_run(config, 4)  # 4 batches into epoch 1 of 11-step epochs
    state = rundir.load_state(config.run_dir)
    assert (state.epoch, state.batch) == (0, 4)
    train_lib.train(config)
    resumed = _weights(tmp_path / "run" / "model.keras")
    assert _max_difference(resumed, _weights(reference / "model.keras")) < 1e-4


@pytest.mark.slow  # two trainings
def test_a_run_with_ema_killed_while_finishing_saves_the_average(tmp_path, monkeypatch, ema_run):
    from test_rundir import _kill_when

    from tfresnet import files
    from tfresnet import train as train_lib

    reference, _ = ema_run
    config = _ema_config(tmp_path)
    fired = _kill_when(monkeypatch, files, "save_model", lambda m, path: "model.keras" in path)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(config)
    assert fired
    monkeypatch.undo()
    keras.backend.clear_session()
    train_lib.train(config)  # training was over: only the finish runs again
    resumed = _weights(tmp_path / "run" / "model.keras")
    assert _max_difference(resumed, _weights(reference / "model.keras")) < 1e-4


def test_flip_averaging_is_the_final_test_and_the_export_only_if_asked(tmp_path):
    """A run on clothes-like data (an MNIST-format folder named "fashion": trained with flips):
    its final test error is the flip-averaged model's, and --export_test_flip serves that."""
    import tensorflow as tf
    from test_idx import write_mnist_folder

    from tfresnet import data as data_lib
    from tfresnet import evaluate, pipeline
    from tfresnet import train as train_lib

    folder = tmp_path / "fashion"
    write_mnist_folder(folder, n_train=96, n_test=32, size=8, classes=3)
    config = _ema_config(
        tmp_path, dataset=str(folder), recipe="fast", epochs=1, batch_size=32, ema_momentum=0.0,
        export=True, export_test_flip=True,
    )  # fmt: skip
    results = train_lib.train(config)
    assert results["recipe"]["test_flip"] is True
    # No per-epoch test curve under fast (only the final test evaluation touches the test set).
    with open(tmp_path / "run" / "history.csv") as f:
        assert "accuracy" in (header := f.readline()) and "test_accuracy" not in header
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    data = data_lib.load_data(str(folder))
    test = pipeline.make_pipeline(data.test, data.info, batch_size=32, training=False)
    images, labels = next(iter(test))
    averaged = evaluate.flip_averaged(model)(images).numpy()
    accuracy = float(np.mean(np.argmax(averaged, axis=1) == labels.numpy()))
    assert 1 - results["final"]["test_error"] == pytest.approx(accuracy)
    assert not np.allclose(averaged, model(images, training=False), atol=1e-4)
    served = tf.saved_model.load(results["export"]).signatures["serving_default"]
    probabilities = served(images=tf.cast(images, tf.uint8))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, averaged, atol=1e-5)


def test_evaluate_with_flip_scores_the_flip_averaged_model(tmp_path):
    from tfresnet import data as data_lib
    from tfresnet import evaluate, models, pipeline

    model = models.build_model("cifar_resnet8", num_classes=10, input_shape=(8, 8, 1))
    head = model.get_layer("logits")  # predictions that depend on the image, and its mirror
    head.kernel.assign(np.random.default_rng(0).normal(0, 3, head.kernel.shape))
    path = str(tmp_path / "m.keras")
    model.save(path)
    digits = data_lib.load_data("digits")
    test = pipeline.make_pipeline(digits.test, digits.info, batch_size=512, training=False)
    images, labels = next(iter(test))
    averaged = evaluate.flip_averaged(model)(images).numpy()
    expected = 1 - float(np.mean(np.argmax(averaged, axis=1) == labels.numpy()))
    single = 1 - float(np.mean(np.argmax(model(images), axis=1) == labels.numpy()))
    assert expected != single  # the two views disagree somewhere: the test can tell them apart
    got = evaluate.evaluate(path, "digits", batch_size=512, flip=True)
    assert got["top1_error"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="at most one of flip and ten_crop"):
        evaluate.evaluate(path, "digits", flip=True, ten_crop=True)


def test_a_recipe_with_an_unknown_schedule_is_refused_not_trained_cosine():
    linear = dataclasses.replace(recipes.CIFAR, lr_schedule="linear")
    with pytest.raises(ValueError, match="Unknown lr_schedule 'linear'"):
        recipes.schedule(linear, 100, depth=20, steps_per_epoch=10)
