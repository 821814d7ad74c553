"""What `results.json` holds: final errors, per-epoch curves, speed, the run's config, versions.

The file is strict JSON (no NaN: a value that does not exist is null), so any JSON reader loads
it. Its time and speed cover every segment of a run that was killed and resumed.

Two training errors (docs/training.md): `train_error` is fit's running mean over augmented
batches in training mode; `final.train_error_eval` one unaugmented inference-mode pass after the
last epoch, measured as the test error is. Every loss includes the weight-decay term
(`weight_decay_loss`); the `*_cross_entropy*` fields leave it out.
"""

import dataclasses
import os
import platform

from tfresnet import models, rundir, specs


def package_versions() -> dict:
    """The versions a run's results were made with."""
    import keras
    import keras_tuner
    import numpy as np
    import tensorflow as tf
    import tensorflow_datasets

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_datasets": tensorflow_datasets.__version__,
        "keras_tuner": keras_tuner.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _errors(values):
    return [None if v is None else 1.0 - float(v) for v in values]


def weight_decay_loss(model) -> float:
    """The weight-decay (L2) term that Keras adds to every loss the model reports, at its
    current weights: weight_decay / 2 times the squared norm of every regularised kernel."""
    return float(sum(float(loss) for loss in model.losses))


def summarize(
    config,
    model,
    info,
    state: rundir.RunState,
    test: dict | None,
    *,
    schedule,
    policy: str,
    replicas: int,
    train_eval: dict | None = None,
) -> dict:
    """The results dict of a run (its `TrainConfig` and `schedule.Schedule`) whose committed
    epochs are `state`. `test` is `model.evaluate(..., return_dict=True)` on the test split, or
    None where it is never touched (the tuner); `train_eval` the same on the training split."""
    history = rundir.curves(state.history)
    curves = {
        "epoch": list(range(1, state.epoch + 1)),
        "train_loss": history.get("loss", []),
        "weight_decay_loss": history.get("weight_decay_loss", []),
        "train_error": _errors(history.get("accuracy", [])),
        "test_error": _errors(history.get("test_accuracy", [])),
        "val_error": _errors(history.get("val_accuracy", [])),
    }
    test, train_eval = test or {}, train_eval or {}
    decay = weight_decay_loss(model)

    def last(key):
        return curves[key][-1] if curves[key] else None

    def error(metrics, key):
        return 1.0 - float(metrics[key]) if key in metrics else None

    def loss(metrics, cross_entropy=False):
        if "loss" not in metrics:
            return None
        return float(metrics["loss"]) - (decay if cross_entropy else 0.0)

    return {
        "config": dataclasses.asdict(config),
        "final": {
            "train_error": last("train_error"),  # fit's running figure (augmented, training mode)
            "train_error_eval": error(train_eval, "accuracy"),
            "train_loss_eval": loss(train_eval),
            "train_cross_entropy_eval": loss(train_eval, cross_entropy=True),
            "test_error": error(test, "accuracy"),
            "test_top5_error": error(test, "top5_accuracy"),
            "test_loss": loss(test),
            "test_cross_entropy": loss(test, cross_entropy=True),
            "weight_decay_loss": decay,
            "val_error": last("val_error"),
        },
        "curves": curves,
        "model": {
            "name": model.name,
            "depth": specs.resolve_spec(config.model).depth,
            "params": models.count_params(model),
            "multiply_adds": models.count_flops(model),
        },
        "data": {"name": info.name, "image_shape": list(info.image_shape), "sizes": info.sizes},
        "precision": policy,  # what "auto" became on this machine
        "schedule": {**dataclasses.asdict(schedule), "recipe": schedule.recipe.name},
        "wall_time_s": sum(s["wall_s"] for s in state.segments),
        "segments": state.segments,  # one per process that trained (a resumed run has several)
        "train_images_per_s": rundir.train_images_per_second(
            state, schedule.batch_size * schedule.steps_per_epoch
        ),
        "replicas": replicas,
        "versions": package_versions(),
        "recipe": dataclasses.asdict(schedule.recipe),  # with the run's tricks
    }
