"""Exports load in a fresh process, match the Keras model, and sit where TF Serving looks."""

import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import test_untrusted
from absl import flags
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

from tfresnet import export
from tfresnet.cli import export as export_cli
from tfresnet.export import export_for_serving
from tfresnet.models import build_model

CLASS_NAMES = ["cat", "dog", "ship", "frog"]
MEAN, STD = [125.0, 123.0, 114.0], [63.0, 62.0, 66.0]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

# Runs in a fresh interpreter: only TensorFlow and the serving protos, no Keras model in memory.
LOADER = textwrap.dedent(
    r"""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    def message(fn):
        try:
            fn()
        except Exception as e:  # report what a client would see
            return str(e)
        return None

    def run(job):
        loaded = tf.saved_model.load(job["dir"])
        sigs = loaded.signatures
        data = np.load(job["inputs"])
        out = {"inputs": {}, "outputs": {}}
        for key in ("serving_default", "serving_bytes"):
            _, spec = sigs[key].structured_input_signature
            out["inputs"][key] = {n: s.dtype.name for n, s in spec.items()}
            out["outputs"][key] = sorted(sigs[key].structured_outputs)
        result = sigs["serving_default"](images=tf.constant(data["images"]))
        out["default"] = {k: v.numpy().tolist() for k, v in result.items() if k != "top_k_names"}
        if "top_k_names" in result:
            out["default"]["top_k_names"] = [[n.decode() for n in r] for r in
                                             result["top_k_names"].numpy()]
        out["default_dtypes"] = {k: v.dtype.name for k, v in result.items()}
        big = sigs["serving_default"](images=tf.constant(data["big"]))
        out["big"] = big["probabilities"].numpy().tolist()
        blobs = [open(p, "rb").read() for p in job["files"]]
        out["bytes"] = sigs["serving_bytes"](image_bytes=tf.constant(blobs))[
            "probabilities"].numpy().tolist()
        out["errors"] = {}
        for name in ("bad_rank", "bad_channels", "bad_float"):
            out["errors"][name] = message(lambda: sigs["serving_default"](
                images=tf.constant(data[name])))
        out["errors"]["bad_bytes_rank"] = message(
            lambda: sigs["serving_bytes"](image_bytes=tf.constant(blobs[0])))
        out["warmup"] = []
        for record in tf.data.TFRecordDataset(job["warmup"]):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            probs = sigs[request.model_spec.signature_name](**inputs)["probabilities"]
            out["warmup"].append([request.model_spec.signature_name, list(probs.shape)])
        if not job["session"]:
            return out
        # How TF Serving runs a signature: a TF1 session with grappler over the whole graph.
        with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], job["dir"])
            sig = meta.signature_def["serving_default"]
            feed, fetch = sig.inputs["images"].name, sig.outputs["probabilities"].name
            out["session"] = sess.run(fetch, {feed: data["images"]}).tolist()
            out["session_errors"] = {
                name: message(lambda: sess.run(fetch, {feed: data[name]}))
                for name in ("bad_rank", "bad_channels")
            }
        return out

    jobs = json.loads(sys.stdin.read())  # sent once the exports exist; TF is imported by then
    json.dump({name: run(job) for name, job in jobs.items()}, sys.stdout)
    """
)


def _tiny_model(channels=3, **kwargs):
    return build_model(
        "cifar_resnet8",
        num_classes=4,
        input_shape=(8, 8, channels),
        pixel_mean=MEAN[:channels],
        pixel_std=STD[:channels],
        **kwargs,
    )


def _encode(array, fmt):
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buffer, fmt)
    return buffer.getvalue()


def _inputs(path, images, files_dir, channels):
    """Save the images (and bad variants) for the loader, plus each image as a PNG file."""
    rng = np.random.default_rng(3)
    big = np.full((2, 37, 53, channels), 200, np.uint8)  # constant: any resize keeps it exact
    np.savez(
        path,
        images=images,
        big=big,
        bad_rank=images[0],
        bad_channels=rng.integers(0, 256, (1, 8, 8, channels + 1), dtype=np.uint8),
        bad_float=images.astype("float32"),
    )
    files = []
    for i, image in enumerate(images):
        files.append(str(files_dir / f"{channels}_{i}.png"))
        with open(files[-1], "wb") as f:
            f.write(_encode(image, "PNG"))
    return files


def _keras_probs(model, images):
    return keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))


def _export_bf16(base, images):
    """A mixed_bfloat16 model's export; the dtype policy is global, so it is put back after."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _tiny_model()
        path = export_for_serving(model, base, model_name="bf16")
        probs = _keras_probs(model, images)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return {
        "path": path,
        "probabilities": probs.tolist(),
        "dtype": str(probs.dtype),
        "compute_dtype": model.get_layer("stem_conv").compute_dtype,
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Three exports (RGB with class names, grey, mixed_bfloat16), loaded in a fresh process."""
    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("served")
    base = tmp / "exports"
    rng = np.random.default_rng(0)
    rgb_images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    grey_images = rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    files = {"rgb": _inputs(tmp / "rgb.npz", rgb_images, tmp, 3)}
    files["grey"] = _inputs(tmp / "grey.npz", grey_images, tmp, 1)
    loader = subprocess.Popen(  # a fresh process; it imports TensorFlow while we export
        [sys.executable, "-c", LOADER],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rgb_model, grey_model = _tiny_model(), _tiny_model(channels=1)
    paths = {
        "rgb": export_for_serving(rgb_model, base, class_names=CLASS_NAMES, top_k=2),
        "grey": export_for_serving(grey_model, base, model_name="grey"),
    }
    expected = {
        "rgb": _keras_probs(rgb_model, rgb_images),
        "grey": _keras_probs(grey_model, grey_images),
        "rgb_big": _keras_probs(rgb_model, np.full((2, 8, 8, 3), 200, np.uint8)),
        "grey_big": _keras_probs(grey_model, np.full((2, 8, 8, 1), 200, np.uint8)),
    }
    bf16_info = _export_bf16(base, rgb_images)
    paths["bf16"] = bf16_info["path"]
    files["bf16"] = files["rgb"]
    jobs = {
        name: {
            "dir": path,
            "inputs": str(tmp / ("grey.npz" if name == "grey" else "rgb.npz")),
            "files": files[name],
            "warmup": os.path.join(path, export.EXTRA_DIR, export.WARMUP_FILE),
            "session": name == "rgb",
        }
        for name, path in paths.items()
    }
    out, err = loader.communicate(json.dumps(jobs), timeout=300)
    assert loader.returncode == 0, err[-3000:]
    loaded = json.loads(out)
    return {
        "base": base,
        "paths": paths,
        "loaded": loaded,
        "expected": expected,
        "bf16": bf16_info,
        "rgb_model": rgb_model,
        "grey_model": grey_model,
    }


def test_signatures_have_named_typed_inputs_and_outputs(served):
    loaded = served["loaded"]["rgb"]
    assert loaded["inputs"] == {
        "serving_default": {"images": "uint8"},
        "serving_bytes": {"image_bytes": "string"},
    }
    outputs = ["probabilities", "top_k_classes", "top_k_names", "top_k_scores"]
    assert loaded["outputs"] == {"serving_default": outputs, "serving_bytes": outputs}
    assert loaded["default_dtypes"] == {
        "probabilities": "float32",
        "top_k_classes": "int32",
        "top_k_scores": "float32",
        "top_k_names": "string",
    }
    assert served["loaded"]["grey"]["outputs"]["serving_default"] == outputs[:2] + outputs[3:]


@pytest.mark.parametrize("name", ["rgb", "grey"])
def test_both_signatures_match_the_keras_model_in_a_fresh_process(served, name):
    loaded, expected = served["loaded"][name], served["expected"][name]
    np.testing.assert_allclose(loaded["default"]["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(loaded["bytes"], expected, atol=1e-6)  # PNG is lossless
    if "session" in loaded:
        np.testing.assert_allclose(loaded["session"], expected, atol=1e-6)  # as TF Serving runs it
    # A 37x53 constant image is resized inside the graph to the model's 8x8.
    np.testing.assert_allclose(loaded["big"], served["expected"][f"{name}_big"], atol=1e-6)


def test_top_k_outputs_agree_with_probabilities(served):
    default, expected = served["loaded"]["rgb"]["default"], served["expected"]["rgb"]
    best = np.argsort(-expected, axis=1)[:, :2]
    np.testing.assert_array_equal(default["top_k_classes"], best)
    np.testing.assert_allclose(
        default["top_k_scores"], np.take_along_axis(expected, best, 1), atol=1e-6
    )
    assert default["top_k_names"] == [[CLASS_NAMES[i] for i in row] for row in best]


def test_mixed_bfloat16_export_outputs_float32_close_to_keras(served):
    info, loaded = served["bf16"], served["loaded"]["bf16"]
    assert info["compute_dtype"] == "bfloat16"
    assert info["dtype"] == "float32"
    assert loaded["default_dtypes"]["probabilities"] == "float32"
    np.testing.assert_allclose(loaded["default"]["probabilities"], info["probabilities"], atol=2e-2)
    np.testing.assert_allclose(loaded["bytes"], info["probabilities"], atol=2e-2)
    np.testing.assert_allclose(np.sum(loaded["bytes"], axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "case, text",
    [
        ("bad_rank", "images must be a batch [N, height, width, 3] (rank 4)"),
        ("bad_channels", "images must have 3 channel(s)"),
        ("bad_float", "expected to be a uint8 tensor but is a float tensor"),
        ("bad_bytes_rank", "image_bytes must be a batch [N] of encoded JPEG/PNG strings"),
    ],
)
def test_bad_input_fails_with_a_clear_message(served, case, text):
    assert text in served["loaded"]["rgb"]["errors"][case]
    if case in served["loaded"]["rgb"]["session_errors"]:
        assert text in served["loaded"]["rgb"]["session_errors"][case]


@pytest.mark.parametrize(
    "name, blob",
    [
        ("38-byte WebP of 10000 x 10000", test_untrusted.WEBP_BOMB),
        pytest.param(  # test_untrusted refuses the GIF bomb in every reader
            "GIF of a 1 x 1 screen and a 10000 x 10000 frame",
            test_untrusted.GIF_BOMB,
            marks=pytest.mark.slow,
        ),
    ],
)
def test_serving_bytes_refuses_bombs_the_old_header_check_missed(served, name, blob):
    path = served["paths"]["grey"]
    serve = tf.saved_model.load(path).signatures["serving_bytes"]
    refused = "image too large: 100000000 pixels, more than 4000"
    with pytest.raises(tf.errors.InvalidArgumentError, match=refused):
        serve(image_bytes=tf.constant([blob]))
    # As TF Serving runs it: a TF1 session, grappler over the whole graph, the check kept.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_bytes"]
        feed, fetch = sig.inputs["image_bytes"].name, sig.outputs["probabilities"].name
        with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
            sess.run(fetch, {feed: [blob]})


@pytest.mark.parametrize(  # JPEG-CMYK by default; GIF and BMP take the same decode-then-grey path
    "fmt, mode",
    [
        pytest.param("GIF", "RGB", marks=pytest.mark.slow),
        ("JPEG", "CMYK"),
        pytest.param("BMP", "RGB", marks=pytest.mark.slow),
    ],
)
def test_grey_export_serves_colour_gif_bmp_and_cmyk_as_their_grey_image(served, fmt, mode):
    # TensorFlow has no grey decode of these ("channels must be 0 or 3 for GIF", libjpeg's
    # "Unsupported color conversion request" for CMYK): the export decodes RGB, then greys.
    blob = test_untrusted.encoded(fmt, size=(8, 8), mode=mode)
    sigs = tf.saved_model.load(served["paths"]["grey"]).signatures
    rgb = tf.io.decode_image(blob, channels=3, expand_animations=False)
    grey = tf.image.rgb_to_grayscale(rgb)[tf.newaxis]
    expected = sigs["serving_default"](images=grey)["probabilities"].numpy()
    got = sigs["serving_bytes"](image_bytes=tf.constant([blob]))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(
        expected, _keras_probs(served["grey_model"], grey.numpy()), atol=1e-6
    )


def test_on_disk_layout_warmup_and_class_names(served):
    base, path = served["base"], served["paths"]["rgb"]
    assert path == str(base / "cifar_resnet8" / "1")
    for name in ("saved_model.pb", "variables", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(path, name))
    with open(os.path.join(path, "assets.extra", "class_names.txt")) as f:
        assert f.read().splitlines() == CLASS_NAMES
    assert not os.path.exists(os.path.join(served["paths"]["grey"], "assets.extra/class_names.txt"))
    for name in ("rgb", "grey", "bf16"):
        assert served["loaded"][name]["warmup"] == [["serving_default", [1, 4]]]
    assert sorted(os.listdir(base)) == ["bf16", "cifar_resnet8", "grey", "models.config"]


def test_models_config_lists_every_export(served):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((served["base"] / "models.config").read_text(), config)
    entries = {c.name: (c.base_path, c.model_platform) for c in config.model_config_list.config}
    assert entries == {
        name: (str(served["base"] / name), "tensorflow")
        for name in ("bf16", "cifar_resnet8", "grey")
    }


@pytest.mark.slow  # an export per version; test_models_config_keeps_other_models stays
def test_next_version_and_refusing_an_existing_one(served):
    base, model = served["base"], served["rgb_model"]
    with pytest.raises(ValueError, match=r"Version 1 of cifar_resnet8 already exists.*=2"):
        export_for_serving(model, base, version=1)
    path = export_for_serving(model, base, warmup=False)
    assert path == str(base / "cifar_resnet8" / "2")
    assert not os.path.exists(os.path.join(path, export.EXTRA_DIR, export.WARMUP_FILE))
    (base / "cifar_resnet8" / "7").mkdir()  # a version made by hand: the next one is 8
    assert export.model_versions(base / "cifar_resnet8") == [1, 2, 7]
    with pytest.raises(ValueError, match="Use version=8"):
        export_for_serving(model, base, version=7)


def test_models_config_keeps_other_models(tmp_path):
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "other" base_path: "/srv/other" '
        'model_platform: "tensorflow" } }\n'
    )
    export_for_serving(_tiny_model(), tmp_path, model_name="mine", warmup=False)
    export.update_models_config(tmp_path, "mine", tmp_path / "mine")  # no duplicate entry
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((tmp_path / "models.config").read_text(), config)
    names = [(c.name, c.base_path) for c in config.model_config_list.config]
    assert names == [("other", "/srv/other"), ("mine", str(tmp_path / "mine"))]
    assert sorted(os.listdir(tmp_path)) == ["mine", "models.config"]  # no temp or lock file


def test_unparsable_models_config_is_not_overwritten(tmp_path):
    (tmp_path / "models.config").write_text("this is not a text proto {")
    with pytest.raises(ValueError, match="not a TF Serving ModelServerConfig"):
        export.update_models_config(tmp_path, "mine", tmp_path / "mine")
    assert (tmp_path / "models.config").read_text() == "this is not a text proto {"


@pytest.mark.parametrize("existing", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_failed_export_leaves_no_version_and_no_temp_dir(tmp_path, monkeypatch, existing):
    model = _tiny_model()
    if existing:  # a served version 1 and its config entry
        (tmp_path / "cifar_resnet8" / "1").mkdir(parents=True)
        export.update_models_config(tmp_path, "cifar_resnet8", tmp_path / "cifar_resnet8")
    config_before = (tmp_path / "models.config").read_text() if existing else None

    def fail_midway(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        export_for_serving(model, tmp_path)
    if existing:
        assert os.listdir(tmp_path / "cifar_resnet8") == ["1"]
        assert (tmp_path / "models.config").read_text() == config_before
    else:
        assert not [n for n in os.listdir(tmp_path) if not n.startswith(".")]
        assert not os.path.exists(tmp_path / "models.config")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resize": "zoom"}, "Unknown resize 'zoom'; allowed: stretch, crop, auto"),
        ({"top_k": 0}, "top_k must be an integer >= 1; got 0"),
        ({"class_names": ["a", "b"]}, "class_names has 2 entries; the model predicts 4"),
        ({"class_names": ["a", "b\tc", "d", "e"]}, "(class_names): it holds the control character"),
        ({"model_name": "a/b"}, "model_name must be letters, digits"),
        ({"version": -1}, "version must be an integer >= 0; got -1"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_for_serving(_tiny_model(), tmp_path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_models_with_unsupported_channels_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"4 channels; exports decode images to one of \(1, 3\)"):
        export_for_serving(build_model("cifar_resnet8", input_shape=(8, 8, 4)), tmp_path)


def test_resize_mode_auto_crops_imagenet_sizes_only():
    assert export.resize_mode("auto", (32, 32)) == "stretch"
    assert export.resize_mode("auto", (128, 128)) == "crop"
    assert export.resize_mode("auto", (224, 100)) == "stretch"
    assert export.resize_mode("stretch", (224, 224)) == "stretch"


def test_crop_scales_shorter_side_by_256_over_224_then_takes_the_centre():
    rng = np.random.default_rng(0)
    # 128 * 256/224 = 146.3: a 146x180 image is already at scale, so only the crop acts.
    image = rng.uniform(0, 255, (1, 146, 180, 3)).astype("float32")
    out = export.fit_to_size(tf.constant(image), (128, 128), "crop").numpy()
    np.testing.assert_array_equal(out, image[:, 9:137, 26:154])
    large = export.fit_to_size(tf.constant(np.tile(image, [1, 3, 3, 1])), (128, 128), "crop")
    assert tuple(large.shape) == (1, 128, 128, 3)
    stretched = export.fit_to_size(tf.constant(image), (8, 8), "stretch")
    assert tuple(stretched.shape) == (1, 8, 8, 3)
    with pytest.raises(ValueError, match="'stretch' or 'crop'; got 'auto'"):
        export.fit_to_size(tf.constant(image), (8, 8), "auto")  # resize_mode resolves "auto"


def test_decode_and_fit_reads_jpeg_and_converts_channels():
    rgb = np.full((20, 30, 3), [200, 100, 50], np.uint8)
    decoded = export.decode_and_fit(tf.constant(_encode(rgb, "JPEG")), (8, 8), 3, "stretch")
    np.testing.assert_allclose(decoded.numpy()[4, 4], [200, 100, 50], atol=3)
    grey = export.decode_and_fit(tf.constant(_encode(rgb, "PNG")), (8, 8), 1, "stretch")
    assert tuple(grey.shape) == (8, 8, 1)
    np.testing.assert_allclose(grey.numpy()[4, 4], [0.2989 * 200 + 0.587 * 100 + 0.114 * 50], 1)


def test_command_line_exports_a_keras_file(tmp_path, capsys):
    _tiny_model().save(tmp_path / "model.keras")
    (tmp_path / "names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    fv = flags.FlagValues()
    export_cli.define_flags(fv)
    fv(["tfresnet export", f"--model={tmp_path}", "--export_dir", str(tmp_path / "out")])
    fv(["tfresnet export", "--class_names", str(tmp_path / "names.txt"), "--version=5"])
    assert export_cli.run(fv, []) == 0
    path = tmp_path / "out" / "cifar_resnet8" / "5"
    assert capsys.readouterr().out.strip() == str(path)
    assert (path / "assets.extra" / "class_names.txt").read_text().split() == CLASS_NAMES
    fv.unparse_flags()
    fv(["tfresnet export", f"--model_path={tmp_path / 'missing.keras'}", "--export_dir=x"])
    with pytest.raises(ValueError, match="No model at .*missing.keras"):
        export_cli.run(fv, [])


def _saved_op_types(path):
    """Every op type in the SavedModel's graph, its functions included."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graph = saved.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@pytest.mark.slow  # every export folds by default: the served fixture checks folded outputs
def test_export_serves_the_batch_norm_folded_model_with_the_same_outputs(tmp_path):
    model = build_model("resnet8", input_shape=(8, 8, 3), num_classes=4)
    rng = np.random.default_rng(7)
    for layer in model.layers:  # trained-looking statistics, so folding changes the weights
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n),
                    rng.uniform(-0.2, 0.2, n),
                    rng.uniform(-0.5, 0.5, n),
                    rng.uniform(0.5, 2.0, n),
                ]
            )
    head = model.get_layer("logits")
    head.kernel.assign(head.kernel * 0.01)  # keep the probabilities away from 0 and 1
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    expected = model(images.astype("float32"), training=False).numpy()
    assert 0.01 < expected.min() and expected.max() < 0.99  # not saturated: differences show

    folded = export_for_serving(model, tmp_path, model_name="folded", warmup=False)
    plain = export_for_serving(
        model, tmp_path, model_name="plain", warmup=False, fold_batch_norm=False
    )

    assert not any("BatchNorm" in op for op in _saved_op_types(folded))
    assert "FusedBatchNormV3" in _saved_op_types(plain)
    for path in (folded, plain):
        served = tf.saved_model.load(path).signatures["serving_default"]
        probabilities = served(images=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


@pytest.mark.parametrize("when", ["before", pytest.param("during", marks=pytest.mark.slow)])
def test_an_export_refused_for_an_unreadable_models_config_leaves_nothing(
    tmp_path, monkeypatch, when
):
    config = tmp_path / "models.config"
    bad = "this is not a text proto {"
    if when == "before":
        config.write_text(bad)
    else:  # made unreadable while the SavedModel is written: refused before it is renamed
        write_assets = export._write_assets_extra

        def damage_then_write(*args):
            config.write_text(bad)
            write_assets(*args)

        monkeypatch.setattr(export, "_write_assets_extra", damage_then_write)
    with pytest.raises(ValueError, match="not a TF Serving ModelServerConfig"):
        export_for_serving(_tiny_model(), tmp_path, warmup=False)
    assert config.read_text() == bad
    assert [n for n in os.listdir(tmp_path) if not n.startswith(".")] == ["models.config"]
    assert not os.path.exists(tmp_path / "cifar_resnet8")  # no version folder, no temp folder


def test_an_export_dir_that_cannot_be_a_folder_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path would have meant the current directory
    with pytest.raises(ValueError, match="export_dir is empty: give a folder path"):
        export_for_serving(_tiny_model(), "")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"export_dir '.*notes.txt/e' is under .*a file, not a"):
        export_for_serving(_tiny_model(), tmp_path / "notes.txt" / "e")
    assert os.listdir(tmp_path) == ["notes.txt"]
