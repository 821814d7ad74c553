import math

import keras
import pytest
import tensorflow as tf

from tfresnet import precision
from tfresnet import train as train_lib
from tfresnet.train import TrainConfig


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_named_policies_pass_through_and_unknown_names_are_refused():
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert precision.resolve(name) == name
    with pytest.raises(ValueError, match="Unknown precision 'bf16'; allowed: float32, mixed_b"):
        precision.resolve("bf16")
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse avx512f avx512_bf16 avx512_vnni", True),
        ("fpu avx512f amx_bf16 amx_tile", True),
        ("fpu sse avx2 avx512f", False),
        ("", False),
    ],
)
def test_cpu_bfloat16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    assert precision.cpu_has_bfloat16(str(cpuinfo)) is expected
    assert precision.cpu_has_bfloat16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize(
    "details, expected",
    [
        ({"compute_capability": (9, 0)}, "mixed_bfloat16"),
        ({"compute_capability": (8, 0)}, "mixed_bfloat16"),
        ({"compute_capability": (7, 5)}, "mixed_float16"),
        ({"compute_capability": (6, 1)}, "float32"),
        ({}, "float32"),
    ],
)
def test_gpu_precision_follows_the_compute_capability(details, expected):
    assert precision.gpu_precision(details) == expected


def test_auto_on_cpus_and_gpus(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    assert precision.resolve("auto") == "mixed_bfloat16"
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    assert precision.resolve("auto") == "float32"
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda d: {"compute_capability": (7, 0)}
    )
    assert precision.resolve("auto") == "mixed_float16"


def _train_two_steps(tmp_path, policy):
    """Two SGD steps of cifar_resnet8 on digits under `policy`: (model, results)."""
    config = TrainConfig(
        model="cifar_resnet8",
        dataset="digits",
        steps=2,
        batch_size=64,
        export=False,
        eval_test_each_epoch=False,
        run_dir=str(tmp_path / policy),
        verbose=0,
        precision=policy,
    )
    return train_lib.fit_model(config)


def test_train_with_auto_records_and_uses_the_policy_it_chose(tmp_path):
    expected = precision.resolve("auto")
    model, results = _train_two_steps(tmp_path, "auto")
    assert results["precision"] == expected
    assert results["config"]["precision"] == "auto"
    compute_dtype = keras.mixed_precision.Policy(expected).compute_dtype
    assert model.get_layer("stem_conv").compute_dtype == compute_dtype
    assert model.output.dtype == "float32"  # the softmax stays float32 in every policy


@pytest.mark.slow  # two trainings; float16 is a GPU policy
def test_mixed_float16_training_gets_loss_scaling_and_bfloat16_does_not(tmp_path):
    seen = {}
    for policy in ("mixed_float16", "mixed_bfloat16"):
        model, results = _train_two_steps(tmp_path, policy)
        seen[policy] = type(model.optimizer).__name__
        assert math.isfinite(results["curves"]["train_loss"][-1]) and results["precision"] == policy
    assert seen == {"mixed_float16": "LossScaleOptimizer", "mixed_bfloat16": "SGD"}


def test_the_tuners_build_makes_its_model_in_the_configs_policy_and_puts_the_callers_back(
    tmp_path,
):
    """KerasTuner builds a trial's model before `fit_model` sets the policy: a mixed-precision
    search builds in it and leaves the process in the policy it had."""
    import keras_tuner

    from tfresnet import tuners
    from tfresnet.tune_config import SearchSpace

    config = TrainConfig(model="cifar_resnet8", precision="mixed_bfloat16", run_dir=str(tmp_path))
    space = SearchSpace(depth=8, shortcut="A", preact=None, learning_rate=None, weight_decay=None)
    hypermodel = tuners.ResNetHyperModel(config, space)
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
