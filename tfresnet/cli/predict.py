"""`tfresnet predict --model=EXPORT image ...`: top-k classes of image files (`predict_files`)."""

import json
import sys
import warnings

from absl import flags

from tfresnet import predict

TAKES_ARGUMENTS = True  # the image files; every other command takes flags only


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "model", None, "Export: base dir, model dir or version dir.", flag_values=fv
    )
    flags.DEFINE_integer("top_k", 5, "Classes printed per image.", flag_values=fv)
    flags.DEFINE_bool("json", False, "Print the results as JSON.", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    """Predict the image files in `args`; exit status 1 when any of them failed."""
    if not fv.model:
        raise ValueError("tfresnet predict needs --model=EXPORT_DIR (base, model or version dir).")
    if not args:
        raise ValueError("Give image files to predict: tfresnet predict --model=EXPORT a.jpg ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # errors are in the printed results
        results = predict.predict_files(fv.model, args, top_k=fv.top_k)
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
