"""predict_files: each file through the export's serving_bytes; bad files reported by name."""

import io
import json
import os
import shutil

import keras
import numpy as np
import pytest
from absl import flags
from PIL import Image

from tfresnet.cli import predict as predict_cli
from tfresnet.export import export_for_serving
from tfresnet.models import build_model
from tfresnet.predict import find_export_dir, format_predictions, load_export, predict_files

CLASS_NAMES = ["cat", "dog", "ship", "frog"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny RGB model exported twice (versions 1 and 2) with class names, plus image files."""
    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("predict")
    model = build_model(
        "cifar_resnet8",
        num_classes=4,
        input_shape=(8, 8, 3),
        pixel_mean=[125.0, 123.0, 114.0],
        pixel_std=[63.0, 62.0, 66.0],
    )
    base = tmp / "exports"
    first = export_for_serving(model, base, class_names=CLASS_NAMES, warmup=False)
    shutil.copytree(first, os.path.join(os.path.dirname(first), "2"))  # a newer version
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    files = {"a.png": _encode(images[0], "PNG"), "b.jpg": _encode(images[1], "JPEG")}
    files["corrupt.png"] = files["a.png"][:40]  # a truncated PNG
    files["notes.txt"] = b"not an image"
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    probs = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False))
    return {"base": base, "dir": tmp, "probabilities": probs, "loaded": load_export(base)}


def _encode(array, fmt):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def test_predicts_files_like_the_keras_model(exported):
    tmp = exported["dir"]
    results = predict_files(exported["loaded"], [tmp / "a.png", tmp / "b.jpg"], top_k=4)
    expected = exported["probabilities"][0]
    order = np.argsort(-expected)
    assert results[0]["file"] == str(tmp / "a.png")
    assert results[0]["classes"] == order.tolist()
    assert results[0]["names"] == [CLASS_NAMES[i] for i in order]
    np.testing.assert_allclose(results[0]["scores"], expected[order], atol=1e-6)
    # JPEG is lossy: still a full ranking of the 4 classes with scores summing to 1.
    assert sorted(results[1]["classes"]) == [0, 1, 2, 3]
    assert sum(results[1]["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_bad_files_are_reported_by_name_and_the_others_predicted(exported):
    tmp = exported["dir"]
    paths = [tmp / "corrupt.png", tmp / "a.png", tmp / "missing.jpg", tmp / "notes.txt"]
    with pytest.warns(UserWarning) as caught:
        results = predict_files(exported["loaded"], paths, top_k=2)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    assert [("error" in r) for r in results] == [True, False, True, True]
    assert results[1]["classes"] == np.argsort(-exported["probabilities"][0])[:2].tolist()
    assert results[2]["error"] == "No such file or directory"
    assert results[3]["error"].startswith("Unknown image file format")
    assert "Detected at node" not in results[0]["error"]
    messages = [str(w.message) for w in caught]
    assert [m.split(":")[0] for m in messages] == [
        f"Cannot predict {tmp / name}" for name in ("corrupt.png", "missing.jpg", "notes.txt")
    ]


def test_format_predictions_prints_names_scores_and_errors():
    results = [
        {"file": "a.png", "classes": [2, 0], "scores": [0.9, 0.05], "names": ["ship", "cat"]},
        {"file": "b.png", "classes": [1], "scores": [0.5]},
        {"file": "c.png", "error": "Unknown image file format"},
    ]
    assert format_predictions(results).splitlines() == [
        "a.png: ship (2) 90.0%, cat (0) 5.0%",
        "b.png: 1 50.0%",
        "c.png: ERROR Unknown image file format",
    ]


def test_export_paths_resolve_to_the_newest_version(exported):
    base = exported["base"]
    newest = str(base / "cifar_resnet8" / "2")
    assert find_export_dir(base) == newest
    assert find_export_dir(base / "cifar_resnet8") == newest
    assert find_export_dir(base / "cifar_resnet8" / "1") == str(base / "cifar_resnet8" / "1")
    assert exported["loaded"].path == newest
    assert exported["loaded"].class_names == tuple(CLASS_NAMES)


def test_ambiguous_or_missing_exports_are_refused(exported, tmp_path):
    (tmp_path / "one" / "3").mkdir(parents=True)
    (tmp_path / "two" / "1").mkdir(parents=True)
    for model in ("one/3", "two/1"):
        (tmp_path / model / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match=r"several models \(one, two\)"):
        find_export_dir(tmp_path)
    assert find_export_dir(tmp_path / "one") == str(tmp_path / "one" / "3")
    with pytest.raises(ValueError, match="No export found"):
        find_export_dir(exported["dir"])
    with pytest.raises(ValueError, match="does not exist"):
        find_export_dir(tmp_path / "nowhere")


def test_top_k_must_be_positive(exported):
    with pytest.raises(ValueError, match="top_k must be an integer >= 1; got 0"):
        predict_files(exported["loaded"], [], top_k=0)


def test_command_line_prints_predictions_and_fails_on_bad_files(exported, capsys):
    tmp = exported["dir"]
    fv = flags.FlagValues()
    predict_cli.define_flags(fv)
    fv(["tfresnet predict", f"--model={exported['base']}", "--top_k=1"])
    assert predict_cli.run(fv, [str(tmp / "a.png")]) == 0
    best = CLASS_NAMES[int(np.argmax(exported["probabilities"][0]))]
    assert capsys.readouterr().out.startswith(f"{tmp / 'a.png'}: {best} (")
    assert predict_cli.run(fv, [str(tmp / "a.png"), str(tmp / "notes.txt")]) == 1
    assert "notes.txt: ERROR Unknown image file format" in capsys.readouterr().out
    fv.unparse_flags()
    fv(["tfresnet predict", f"--model={exported['base']}", "--json"])
    predict_cli.run(fv, [str(tmp / "a.png")])
    assert json.loads(capsys.readouterr().out)[0]["names"][0] == best
    with pytest.raises(ValueError, match="Give image files to predict"):
        predict_cli.run(fv, [])


@pytest.mark.slow  # test_export's grey-export test stays
def test_grey_export_predicts_cmyk_jpeg_and_gif_as_grey_with_a_clean_stderr(tmp_path, capfd):
    # Before: "channels must be 0 or 3 for GIF", and libjpeg's "Unsupported color conversion
    # request" printed to stderr for the CMYK JPEG.
    import tensorflow as tf

    model = build_model("cifar_resnet8", num_classes=4, input_shape=(8, 8, 1))
    export_for_serving(model, tmp_path / "exports", warmup=False)
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    paths = []
    for name, image in (("cmyk.jpg", Image.fromarray(rgb).convert("CMYK")), ("a.gif", rgb)):
        image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        image.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    fv = flags.FlagValues()
    predict_cli.define_flags(fv)
    fv(["tfresnet predict", f"--model={tmp_path / 'exports'}", "--json", "--top_k=4"])
    assert predict_cli.run(fv, paths) == 0
    out, err = capfd.readouterr()
    assert "Unsupported color conversion" not in err and "channels" not in err, err
    for path, result in zip(paths, json.loads(out), strict=True):
        with open(path, "rb") as f:
            rgb_decoded = tf.io.decode_image(f.read(), channels=3, expand_animations=False)
        grey = tf.image.rgb_to_grayscale(rgb_decoded)[tf.newaxis]
        expected = keras.ops.convert_to_numpy(model(tf.cast(grey, "float32"), training=False))[0]
        np.testing.assert_allclose(result["scores"], expected[result["classes"]], atol=1e-6)


def test_libjpegs_own_error_line_becomes_part_of_the_files_error(exported, tmp_path, capfd):
    import test_untrusted

    (tmp_path / "bad.jpg").write_bytes(test_untrusted.bad_huffman_jpeg())
    with pytest.warns(UserWarning):
        results = predict_files(
            exported["loaded"], [tmp_path / "bad.jpg", exported["dir"] / "a.png"]
        )
    assert results[0]["error"].endswith("(Bogus Huffman table definition)")
    assert "classes" in results[1]
    assert "Bogus" not in capfd.readouterr().err  # libjpeg prints it to fd 2 itself
