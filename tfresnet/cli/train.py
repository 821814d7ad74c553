"""`tfresnet train`: flags fill a `train.TrainConfig`, then `train.train(config)`.

The flags are `TrainConfig`'s fields (`config_flags`), plus `--config=PATH` to start from a
saved run's config.json, the flags given on the command line overriding its settings.
"""

from tfresnet import train as train_lib
from tfresnet.cli import config_flags


def define_flags(fv):
    config_flags.define_config_file_flag(fv, "TrainConfig")
    config_flags.define_flags(fv, train_lib.TrainConfig)


def config_from_flags(fv) -> train_lib.TrainConfig:
    """The `TrainConfig` of the flags (and of `--config`'s file, where given)."""
    cls = train_lib.TrainConfig
    names = config_flags.flag_names(cls)
    values = config_flags.values_from_flags(fv, names, cls, not_saved=train_lib.COMMAND_FIELDS)
    return cls(**values)


def run(fv, args):
    results = train_lib.train(config_from_flags(fv))
    final = results["final"]
    top5 = final["test_top5_error"]
    print(
        f"\n{results['model']['name']} on {results['data']['name']}: "
        f"test error {100 * final['test_error']:.2f}%"
        + (f", top-5 {100 * top5:.2f}%" if top5 is not None else "")
        + f", train error {100 * final['train_error_eval']:.2f}% (unaugmented, inference mode; "
        f"running over the last epoch {100 * final['train_error']:.2f}%), "
        f"{results['wall_time_s']:.0f} s, "
        f"{results['train_images_per_s'] or 0:.0f} images/s"
    )
    print(f"run directory: {results['config']['run_dir']}")
    return 0
