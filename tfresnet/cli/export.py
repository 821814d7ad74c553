"""`tfresnet export`: a .keras model (or a run's), or a model with weights shipped with tfresnet
(`--model=resnet20 --weights=fashion_mnist`), as a SavedModel for TF Serving
(`export.export_for_serving`)."""

import os

from absl import flags

from tfresnet import evaluate, export, images, untrusted
from tfresnet.cli import predict as predict_command


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "model_path",
        None,
        "A .keras file or a run directory (its model.keras); with --weights, a model name.",
        flag_values=fv,
    )
    flags.DEFINE_alias("model", "model_path", flag_values=fv)
    predict_command.define_weights_flags(fv)
    flags.DEFINE_string(
        "export_dir", None, "Base dir: <export_dir>/<model_name>/<version>/.", flag_values=fv
    )
    flags.DEFINE_string("model_name", None, "Served name; default the model's.", flag_values=fv)
    flags.DEFINE_integer("version", None, "Version; default the next free one.", flag_values=fv)
    flags.DEFINE_string("class_names", None, "Text file, one class per line.", flag_values=fv)
    flags.DEFINE_integer("top_k", 5, "Classes returned per image.", flag_values=fv)
    flags.DEFINE_enum(
        "resize", "auto", export.RESIZE_MODES, "How images reach the model size.", flag_values=fv
    )
    flags.DEFINE_bool("warmup", True, "Write a TF Serving warm-up request.", flag_values=fv)
    flags.DEFINE_bool(
        "fold_batch_norm", True, "Serve with BN folded into the convs.", flag_values=fv
    )
    flags.DEFINE_integer(
        "max_pixels",
        images.MAX_PIXELS,
        "serving_bytes refuses larger images (size read from the headers, before decoding).",
        lower_bound=1,
        flag_values=fv,
    )


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Load the .keras model the flags name, export it, print the version directory."""
    if not fv.model_path or not fv.export_dir:
        raise ValueError("tfresnet export needs --model_path (or --model) and --export_dir.")
    class_names = None
    if fv.weights or fv.weights_dir:  # the shipped class names, unless --class_names replaces them
        model, class_names = predict_command.shipped_model(fv, fv.model_path)
    else:
        model = untrusted.load_keras_model(evaluate.resolve_model_path(fv.model_path))
    if fv.class_names:
        if not os.path.isfile(fv.class_names):
            raise ValueError(
                f"--class_names file {fv.class_names!r} does not exist (give a text file, one "
                "class name per line)."
            )
        with open(fv.class_names) as f:
            class_names = [line.rstrip("\n") for line in f if line.strip()]
    path = export.export_for_serving(
        model,
        fv.export_dir,
        model_name=fv.model_name,
        version=fv.version,
        class_names=class_names,
        top_k=fv.top_k,
        resize=fv.resize,
        warmup=fv.warmup,
        fold_batch_norm=fv.fold_batch_norm,
        max_pixels=fv.max_pixels,
    )
    print(path)
    return 0
