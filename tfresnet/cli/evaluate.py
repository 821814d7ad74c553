"""`tfresnet evaluate`: top-1/top-5 test error of a .keras model or a run (`evaluate.evaluate`)."""

import json

from absl import flags

from tfresnet import evaluate as evaluate_lib


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("model_path", None, "A .keras file or a run directory.", flag_values=fv)
    flags.DEFINE_string(
        "dataset",
        None,
        "Data set to evaluate on; default the run's own (else digits).",
        flag_values=fv,
    )
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory.", flag_values=fv)
    flags.DEFINE_integer(
        "image_size", None, "Model input size for folders/large images.", flag_values=fv
    )
    flags.DEFINE_integer("batch_size", 128, "Evaluation batch size.", flag_values=fv)
    flags.DEFINE_bool("ten_crop", False, "The paper's 10-crop testing.", flag_values=fv)
    flags.DEFINE_bool(
        "flip",
        False,
        "Average each image's prediction with its mirror's (the fast recipe's final test).",
        flag_values=fv,
    )
    flags.mark_flag_as_required("model_path", flag_values=fv)


def run(fv: flags.FlagValues, args: list[str]) -> int:
    result = evaluate_lib.evaluate(
        fv.model_path,
        fv.dataset,
        data_dir=fv.data_dir,
        batch_size=fv.batch_size,
        image_size=fv.image_size,
        ten_crop=fv.ten_crop,
        flip=fv.flip,
    )
    print(json.dumps(result, indent=2))
    return 0
