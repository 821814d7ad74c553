"""`tfresnet tune`: flags fill a `tuning.TuneConfig`, then `tuning.search(config)`.

The flags are the fields of the `TrainConfig` every trial shares (less what the space or the
trial sets: no --model, --run_dir or --resume), of the `SearchSpace` (as lists) and of the
`TuneConfig` itself.
"""

import dataclasses

from tfresnet import train as train_lib
from tfresnet import tune_config, tuning
from tfresnet.cli import config_flags

NOT_SHARED = (*tune_config.SPACE_FIELDS, *tune_config.TRIAL_FIELDS)


def define_flags(fv) -> None:
    shared = dataclasses.asdict(tune_config.shared_train_config())
    config_flags.define_flags(fv, train_lib.TrainConfig, exclude=NOT_SHARED, defaults=shared)
    space = config_flags.flag_names(tuning.SearchSpace)
    config_flags.define_flags(fv, tuning.SearchSpace, defaults=dict.fromkeys(space))
    config_flags.define_flags(fv, tuning.TuneConfig)


def space_from_flags(fv) -> tuning.SearchSpace:
    """The tuner's default space with the dimensions given on the command line replaced."""
    given = {
        name: tuple(fv[name].value)
        for name in config_flags.flag_names(tuning.SearchSpace)
        if fv[name].value is not None and name != "family"
    }
    return dataclasses.replace(tune_config.default_space(fv.tuner), family=fv.family, **given)


def config_from_flags(fv) -> tuning.TuneConfig:
    shared = config_flags.flag_names(train_lib.TrainConfig, exclude=NOT_SHARED)
    own = config_flags.flag_names(tuning.TuneConfig)
    return tuning.TuneConfig(
        train=train_lib.TrainConfig(**config_flags.values_from_flags(fv, shared)),
        space=space_from_flags(fv),
        **config_flags.values_from_flags(fv, own),
    )


def run(fv, args) -> int:
    del args  # none: main refuses them
    results = tuning.search(config_from_flags(fv))
    if "worker" in results:
        print(f"worker {results['worker']}: no trials left")
    else:
        print(f"\nsearch directory: {results['directory']}")
    return 0
