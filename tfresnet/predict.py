"""Predict image files with an export from `tfresnet.export` (what `tfresnet predict` calls).

    results = predict_files("exports", ["cat.jpg", "dog.png"], top_k=3)
    print(format_predictions(results))

Each file goes through the export's `serving_bytes` signature, so local predictions match
served ones; a file that cannot be read or decoded gets an "error" entry, the rest go on.
"""

import dataclasses
import os
import sys
import warnings

import numpy as np
import tensorflow as tf

from tfresnet import export, files, images, untrusted


@dataclasses.dataclass(frozen=True)
class ServingExport:
    """A loaded export: its version directory, the loaded SavedModel and its class names."""

    path: str
    saved_model: object
    class_names: tuple | None


def find_export_dir(path: str | os.PathLike) -> str:
    """The version directory (holding saved_model.pb) that `path` names: itself, the newest
    version of a model dir `<base>/<name>`, or of the one model in a base dir."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        what = "is a file" if os.path.exists(path) else "does not exist"
        raise ValueError(
            f"Export path {path} {what}; give the export's base, model or version directory."
        )
    versions = _saved_versions(path)
    if versions:
        return os.path.join(path, str(versions[-1]))
    models = sorted(name for name in os.listdir(path) if _saved_versions(os.path.join(path, name)))
    if len(models) == 1:
        return find_export_dir(os.path.join(path, models[0]))
    if models:
        raise ValueError(
            f"{path} holds several models ({', '.join(models)}); pass one of "
            f"{', '.join(os.path.join(path, m) for m in models)}."
        )
    raise ValueError(
        f"No export found at {path}: expected a version dir with saved_model.pb, a model dir "
        f"<base>/<name> with integer versions, or a base dir with one model."
    )


def load_export(path: str | os.PathLike) -> ServingExport:
    """Load the newest version under `path` (see `find_export_dir`) as a `ServingExport`."""
    version_dir = find_export_dir(path)
    try:
        saved_model = tf.saved_model.load(version_dir)
    except (OSError, tf.errors.OpError) as err:  # cut short, overwritten, flipped bits
        if isinstance(err, PermissionError):
            raise
        raise files.CorruptFile(
            f"{version_dir} is not a readable SavedModel ({images.error_line(err)[:300]}); it "
            "may be truncated or corrupt: export the model again (tfresnet export)."
        ) from err
    missing = [s for s in ("serving_default", "serving_bytes") if s not in saved_model.signatures]
    if missing:
        raise ValueError(
            f"{version_dir} lacks the signature(s) {missing}; export it with "
            f"tfresnet.export.export_for_serving."
        )
    names_file = os.path.join(version_dir, export.EXTRA_DIR, export.CLASS_NAMES_FILE)
    class_names = None
    if os.path.exists(names_file):
        with open(names_file) as f:
            class_names = tuple(line.rstrip("\n") for line in f)
    return ServingExport(version_dir, saved_model, class_names)


def predict_files(
    export_dir: str | os.PathLike | ServingExport, paths: list[str], top_k: int = 5
) -> list[dict]:
    """Top-k predictions for each image file, in order; bad files are reported, not fatal.

    Args:
      export_dir: a path `load_export` accepts, or an already loaded `ServingExport`.
      paths: image file paths (JPEG, PNG, GIF, BMP or WebP; at most the export's max_pixels
        pixels and `images.MAX_IMAGE_BYTES` bytes, checked before reading or decoding).
      top_k: int >= 1, classes per file (at most the number of classes).

    Returns:
      One dict per path: {"file", "classes", "scores"} plus "names" when the export has class
      names, or {"file", "error"} when the file could not be read or decoded.
    """
    export.check_int("top_k", top_k, 1)
    loaded = export_dir if isinstance(export_dir, ServingExport) else load_export(export_dir)
    signature = loaded.saved_model.signatures["serving_bytes"]
    results = []
    for path in paths:
        path = os.fspath(path)
        said = []
        try:
            kind = files.special_file(path)
            if kind:  # opening a FIFO blocks until someone writes; a device reads forever
                raise untrusted.FileRefused(f"a {kind}, not a regular file: not read")
            data = images.read_image_file(path)
            with images.decoder_messages(said):
                outputs = signature(image_bytes=tf.constant([data]))
        except (OSError, untrusted.FileRefused, tf.errors.InvalidArgumentError) as e:
            reason = images.error_line(e)
            if said:  # libjpeg's own words: "Bogus Huffman table definition"
                reason = f"{reason.rstrip('.')} ({'; '.join(said)})"
            warnings.warn(f"Cannot predict {path}: {reason}", stacklevel=2)
            results.append({"file": path, "error": reason})
            continue
        sys.stderr.write("".join(f"{line}\n" for line in said))  # not about a refusal
        probabilities = outputs["probabilities"].numpy()[0]
        results.append(_top_k(path, probabilities, top_k, loaded.class_names))
    return results


def _top_k(path, probabilities, top_k, class_names):
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    result = {
        "file": path,
        "classes": [int(i) for i in order],
        "scores": [float(probabilities[i]) for i in order],
    }
    if class_names is not None:
        result["names"] = [class_names[i] for i in order]
    return result


def format_predictions(results: list[dict]) -> str:
    """Human-readable lines: `file: name (class) 93.1%, ...` or `file: ERROR reason`."""
    lines = []
    for result in results:
        if "error" in result:
            lines.append(f"{result['file']}: ERROR {result['error']}")
            continue
        names = result.get("names") or [None] * len(result["classes"])
        parts = [
            f"{name} ({index}) {score:.1%}" if name is not None else f"{index} {score:.1%}"
            for index, name, score in zip(result["classes"], names, result["scores"], strict=True)
        ]
        lines.append(f"{result['file']}: {', '.join(parts)}")
    return "\n".join(lines)


def _saved_versions(model_dir):
    """The version folders of `model_dir` that hold a saved_model.pb, ascending."""
    versions = export.model_versions(model_dir)
    return [
        v for v in versions if os.path.isfile(os.path.join(model_dir, str(v), "saved_model.pb"))
    ]
