"""`tfresnet predict --model=EXPORT image ...`: top-k classes of image files (`predict_files`);
`--model=resnet20 --weights=fashion_mnist`: of the weights shipped with tfresnet, served by a
temporary export so that they predict exactly as a served export would."""

import json
import sys
import tempfile
import warnings

from absl import flags

from tfresnet import export, predict

TAKES_ARGUMENTS = True  # the image files; every other command takes flags only


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "model",
        None,
        "Export: base dir, model dir or version dir; with --weights, a model name (resnet20).",
        flag_values=fv,
    )
    define_weights_flags(fv)
    flags.DEFINE_integer("top_k", 5, "Classes printed per image.", flag_values=fv)
    flags.DEFINE_bool("json", False, "Print the results as JSON.", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Predict the image files in `args`; exit status 1 when any of them failed."""
    if not fv.model:
        raise ValueError(
            "tfresnet predict needs --model=EXPORT_DIR (base, model or version dir), or "
            "--model=NAME --weights=WEIGHTS (e.g. --model=resnet20 --weights=fashion_mnist)."
        )
    if not args:
        raise ValueError("Give image files to predict: tfresnet predict --model=EXPORT a.jpg ...")
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as served:
        warnings.simplefilter("ignore")  # errors are in the printed results
        source = fv.model
        if fv.weights or fv.weights_dir:
            model, class_names = shipped_model(fv, fv.model)
            source = export.export_for_serving(model, served, class_names=class_names, warmup=False)
        results = predict.predict_files(source, args, top_k=fv.top_k)
    print(json.dumps(results, indent=2) if fv.json else predict.format_predictions(results))
    failed = [r for r in results if "error" in r]
    if failed:
        first = f"{failed[0]['file']}: {failed[0]['error'].rstrip('.')}"
        more = f" (and {len(failed) - 1} more, listed above)" if len(failed) > 1 else ""
        print(
            f"error: {len(failed)} of {len(results)} images could not be predicted: {first}{more}.",
            file=sys.stderr,
        )
        return 1
    return 0


def define_weights_flags(fv: flags.FlagValues) -> None:
    """--weights and --weights_dir, for `tfresnet predict` and `tfresnet export`."""
    flags.DEFINE_string(
        "weights",
        None,
        "Weights shipped with tfresnet for --model (e.g. fashion_mnist for resnet20; "
        "docs/models.md lists them), or a .weights.h5 file.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "weights_dir",
        None,
        "Where --weights are looked up; default the installed package's.",
        flag_values=fv,
    )


def shipped_model(fv: flags.FlagValues, name: str) -> tuple:
    """(model, class names) of the model `name` with --weights; ValueError for a bad
    combination."""
    from tfresnet import shipped

    if fv.weights_dir and not fv.weights:
        raise ValueError("--weights_dir applies only with --weights=NAME.")
    return shipped.shipped_model(name, fv.weights, fv.weights_dir)
