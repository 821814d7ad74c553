"""What `results.json` holds: final errors, per-epoch curves, speed, the run's config, versions.

The file is strict JSON (no NaN: a value that does not exist is null), so any JSON reader loads
it. Its time and speed cover every segment of a run that was killed and resumed.
"""

import dataclasses
import os
import platform

from tfresnet import models, rundir


def package_versions() -> dict:
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


def summarize(config, model, info, state, test, *, schedule, policy, replicas) -> dict:
    """The results dict of a run whose committed epochs are `state` (a `rundir.RunState`).

    `test` is `model.evaluate(..., return_dict=True)` on the test split, or None when the caller
    never touches it (the tuner). `schedule` is the run's `train.Schedule`.
    """
    history = rundir.curves(state.history)
    curves = {
        "epoch": list(range(1, state.epoch + 1)),
        "train_loss": history.get("loss", []),
        "weight_decay_loss": history.get("weight_decay_loss", []),
        "train_error": _errors(history.get("accuracy", [])),
        "test_error": _errors(history.get("test_accuracy", [])),
        "val_error": _errors(history.get("val_accuracy", [])),
    }
    test = test or {}

    def last(key):
        return curves[key][-1] if curves[key] else None

    def error(key):
        return 1.0 - float(test[key]) if key in test else None

    return {
        "config": dataclasses.asdict(config),
        "final": {
            "train_error": last("train_error"),
            "test_error": error("accuracy"),
            "test_top5_error": error("top5_accuracy"),
            "test_loss": float(test["loss"]) if "loss" in test else None,
            "val_error": last("val_error"),
        },
        "curves": curves,
        "model": {
            "name": model.name,
            "depth": models.resolve_spec(config.model).depth,
            "params": models.count_params(model),
            "multiply_adds": models.count_flops(model),
        },
        "data": {"name": info.name, "image_shape": list(info.image_shape), "sizes": info.sizes},
        "precision": policy,  # what "auto" became on this machine
        "schedule": dataclasses.asdict(schedule),
        "wall_time_s": sum(s["wall_s"] for s in state.segments),
        "segments": state.segments,  # one per process that trained (a resumed run has several)
        "train_images_per_s": rundir.train_images_per_second(
            state, schedule.batch_size * schedule.steps_per_epoch
        ),
        "replicas": replicas,
        "versions": package_versions(),
    }
