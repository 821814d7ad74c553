"""The model family on every Keras 3 backend: TensorFlow, JAX and PyTorch give the same numbers.

Run it under each backend (Keras picks one at import, so one pytest run per backend):

    pytest -q tests/test_backends.py                           # TF (the default suite)
    KERAS_BACKEND=jax pytest -q tests/test_backends.py         # .ci/run: a venv without TF
    KERAS_BACKEND=torch pytest -q tests/test_backends.py

The reference is tests/data/backends/: six tiny nets (basic and bottleneck blocks, shortcut
options A, B and C) with weights drawn from a NumPy generator seeded by each variable's path, so
every backend rebuilds the same weights; their logits under TensorFlow, in inference and in
training mode (batch statistics), in reference.npz; and the nets saved as .keras by TensorFlow.
Under TF the tests rebuild the reference in memory and compare it with the committed one; under
JAX and torch the same comparison checks the backend against TF. Cross-backend loading runs the
other backends in subprocesses and skips the ones not installed. Regenerate the files (under
TF, after a deliberate change to the nets) with `python tests/test_backends.py --write`.
"""

import importlib.util
import json
import os
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
from repo_files import ROOT, repo_file

import tfresnet
from benchmarks import backend_bench
from tfresnet import specs

# resolve(): under `bazel test` this file is a symlink into the checkout.
DATA = repo_file("tests/data/backends")
REFERENCE = DATA / "reference.npz"
BACKENDS = ("tensorflow", "jax", "torch")
BACKEND = keras.backend.backend()

BASIC = specs.ResNetSpec("cifar", "basic", (1, 1), stage_filters=(4, 8))
# stem_filters=8: the first block keeps its shape (an identity shortcut unless option C)
BOTTLENECK = specs.ResNetSpec(
    "imagenet", "bottleneck", (1, 1), stage_filters=(2, 4), stem_filters=8
)
# name -> (spec, shortcut, input size): every shortcut option on both block kinds; stride-2
# 3x3 convs on even inputs (TF's asymmetric "same" padding), option A's zero-padding layer.
CASES = {
    f"{block}_{option}": (spec, option, size)
    for block, spec, size in (("basic", BASIC, 8), ("bottleneck", BOTTLENECK, 16))
    for option in ("A", "B", "C")
}
SAVED = ("basic_A", "bottleneck_B")  # the families' defaults, committed as TF-saved .keras files
BATCH, CLASSES = 4, 5
# float32 convs in another library's order: a few ulps of logits of size ~1
RTOL, ATOL = 1e-4, 1e-4


def build(case):
    spec, shortcut, size = CASES[case]
    return tfresnet.build_model(
        spec,
        input_shape=(size, size, 3),
        shortcut=shortcut,
        num_classes=CLASSES,
        classifier_activation=None,
        model_name=case,
    )


def seeded_weights(model, seed=0):
    """Give every variable values drawn from a generator seeded by its path (backend-neutral).

    Trained-looking BN statistics and gammas, so folding and the fused kernel are exercised.
    """
    for variable in model.weights:
        rng = np.random.default_rng([seed, zlib.crc32(variable.path.encode())])
        shape, kind = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if kind in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif kind in ("beta", "moving_mean", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        else:  # kernels, He-normal
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        variable.assign(value.astype(variable.dtype))
    return model


def images(case):
    size = CASES[case][2]
    return np.random.default_rng(size).uniform(-1.0, 1.0, (BATCH, size, size, 3)).astype("float32")


def logits(model, case, training=False):
    return keras.ops.convert_to_numpy(model(images(case), training=training))


def compute_reference(case):
    """{key: array} of one case on this backend; the inference logits come first, since a
    training-mode call moves the BN statistics."""
    model = seeded_weights(build(case))
    inference = logits(model, case)
    return model, {
        f"{case}.inference": inference,
        f"{case}.training": logits(model, case, training=True),
        f"{case}.params": np.array(tfresnet.count_params(model)),
        f"{case}.flops": np.array(tfresnet.count_flops(model)),
    }


def write_reference(folder=DATA):
    """The committed reference: logits and counts in reference.npz, the SAVED nets as .keras."""
    assert BACKEND == "tensorflow", "the reference is TensorFlow's: run with KERAS_BACKEND unset"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for case in CASES:
        model, values = compute_reference(case)
        if case in SAVED:
            seeded_weights(model).save(folder / f"{case}.keras")  # the weights before training
        arrays.update(values)
    np.savez_compressed(folder / "reference.npz", **arrays)


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return dict(data)


def _installed(backend):
    return importlib.util.find_spec(backend) is not None


# --- (a) the same weights give TensorFlow's numbers ----------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_seeded_nets_give_tensorflows_logits(case, reference):
    _, values = compute_reference(case)
    for key in (f"{case}.params", f"{case}.flops"):
        assert values[key] == reference[key], key
    for mode in ("inference", "training"):  # moving statistics / batch statistics
        np.testing.assert_allclose(
            values[f"{case}.{mode}"], reference[f"{case}.{mode}"], rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("case", SAVED)
def test_tensorflow_saved_file_loads_and_gives_its_logits(case, reference):
    model = keras.saving.load_model(DATA / f"{case}.keras")
    np.testing.assert_allclose(
        logits(model, case), reference[f"{case}.inference"], rtol=RTOL, atol=ATOL
    )
    built = build(case)  # the loaded weights fit this backend's build, in order
    built.set_weights(model.get_weights())
    np.testing.assert_allclose(logits(built, case), logits(model, case), rtol=RTOL, atol=ATOL)


def test_folded_model_and_backbone_agree_with_the_reference(reference):
    case = "bottleneck_B"
    model = seeded_weights(build(case))
    folded = tfresnet.fold_batch_norm(model)
    assert len(folded.layers) < len(model.layers)
    np.testing.assert_allclose(
        logits(folded, case), reference[f"{case}.inference"], rtol=RTOL, atol=ATOL
    )
    spec, shortcut, size = CASES[case]
    features = tfresnet.backbone(spec, input_shape=(size, size, 3), shortcut=shortcut)
    tfresnet.load_weights_by_name(features, model)
    outputs = features(images(case), training=False)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "stage1": (BATCH, 4, 4, 8),
        "stage2": (BATCH, 2, 2, 16),
    }


# --- (b) training works ---------------------------------------------------------------------


def test_a_few_fit_steps_reduce_the_loss():
    model = build("basic_A")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, CLASSES, 16)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    losses = model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


# --- (c) a file saved under one backend loads under another ---------------------------------

_LOAD = """
import sys
import keras, numpy as np
import tfresnet.layers  # registers the custom layers
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
print(keras.backend.backend())
"""


def _python(code, *args, backend=BACKEND):
    """stdout of `code` run by a fresh interpreter under `backend`; fails on a non-zero exit."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    "target",
    [pytest.param(b, marks=pytest.mark.slow) if b == "torch" else b for b in BACKENDS],
)  # torch's import alone takes seconds
def test_file_saved_here_loads_under_another_backend(target, tmp_path, reference):
    if target == BACKEND:
        pytest.skip(f"{target} is this run's backend; the other backends load from it")
    if not _installed(target):
        pytest.skip(f"KERAS_BACKEND={target} needs the {target} package, not installed here")
    case = "basic_A"  # option A's custom layer and the fused BN class, by their registered names
    seeded_weights(build(case)).save(tmp_path / "model.keras")
    np.save(tmp_path / "images.npy", images(case))
    files = [str(tmp_path / name) for name in ("model.keras", "images.npy", "out.npy")]
    assert _python(_LOAD, *files, backend=target).split()[-1] == target
    np.testing.assert_allclose(
        np.load(files[2]), reference[f"{case}.inference"], rtol=RTOL, atol=ATOL
    )


# --- the family without TensorFlow, and the backend-neutral benchmark ----------------------


def test_model_family_imports_without_tensorflow():
    if _installed("tensorflow"):
        pytest.skip("TensorFlow is installed here; .ci/run's venv without it runs this test")
    import benchmarks.backend_bench  # noqa: F401
    import tfresnet.blocks  # noqa: F401
    import tfresnet.inference  # noqa: F401
    import tfresnet.layers  # noqa: F401
    import tfresnet.models  # noqa: F401
    import tfresnet.pretrained  # noqa: F401
    import tfresnet.specs  # noqa: F401

    assert "tensorflow" not in sys.modules


# Under TensorFlow, test_cli's fresh interpreter checks this too (it starts TensorFlow anyway).
@(pytest.mark.slow if BACKEND == "tensorflow" else lambda test: test)
def test_import_tfresnet_registers_its_layers():
    # docs/models.md's promise: `.keras` files load in safe mode after `import tfresnet`.
    code = (
        "import keras, tfresnet\n"
        "for name in ('BatchNormalization', 'ZeroPadShortcut'):\n"
        "    assert keras.saving.get_registered_object('tfresnet>' + name), (\n"
        "        f'import tfresnet left tfresnet>{name} unregistered: .keras files fail to load')\n"
    )
    _python(code)


def test_backend_bench_runs_a_tiny_model():
    before = keras.mixed_precision.global_policy().name
    lines = []
    config = backend_bench.BackendBenchConfig(
        model="cifar_resnet8", image_size=8, batch_size=4, steps=2, repeats=1
    )
    record = backend_bench.run(config, emit=lines.append)
    assert json.loads(lines[0]) == record
    assert record["backend"] == BACKEND and record["precision"] == "mixed_bfloat16"
    assert record["params"] == tfresnet.count_params(tfresnet.build_model("cifar_resnet8"))
    assert record["train_img_s"] > 0 and record["infer_img_s"] > 0
    assert keras.mixed_precision.global_policy().name == before  # the policy is restored


def test_backend_bench_refuses_bad_settings():
    with pytest.raises(ValueError, match="allowed: float32"):
        backend_bench.BackendBenchConfig(precision="auto")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        backend_bench.BackendBenchConfig(batch_size=0)
    with pytest.raises(ValueError, match="Unknown model name"):
        backend_bench.BackendBenchConfig(model="resnet_7")
    assert backend_bench.main(["--jit_compile=maybe"]) == 2
    assert backend_bench.main(["resnet20"]) == 2  # a stray argument, not a model flag


def test_backend_bench_cli_help_lists_its_flags(capsys):
    assert backend_bench.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("python -m benchmarks.backend_bench flags:") and "--batch_size" in out


def test_backend_bench_cli_ends_any_failure_in_one_line(monkeypatch, capsys):
    def out_of_memory(config):
        raise MemoryError("no room for the batch\n  (details)")

    monkeypatch.setattr(backend_bench, "run", out_of_memory)
    assert backend_bench.main(["--model=resnet8"]) == 1
    assert capsys.readouterr().err == "error: MemoryError: no room for the batch\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_backends.py --write   (under TF: the reference files)")
    write_reference()
    print(f"wrote {sorted(p.name for p in DATA.iterdir())}")
