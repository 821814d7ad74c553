"""`tfresnet tune`: the shared train flags, the space and the tuner fill a `tuning.TuneConfig`.

Calls `tuning.search(config)`.
"""

import dataclasses

from absl import flags

from tfresnet import blocks, specs, tuning
from tfresnet.cli import train as train_cli

# SearchSpace dimension -> (absl's parser of one value, help). A list is searched, one value
# fixed; `tuning.SearchSpace` checks the values.
DIMENSIONS = {
    "depth": (
        flags.IntegerParser(),
        "Depths to search; default the paper's (CIFAR 20,32,44,56,110; ImageNet 18,...,152).",
    ),
    "shortcut": (
        flags.EnumParser(blocks.SHORTCUTS),
        f"Shortcut options among {','.join(blocks.SHORTCUTS)} (none = plain net).",
    ),
    "preact": (flags.BooleanParser(), "Pre-activation: true, false or true,false."),
    "learning_rate": (flags.FloatParser(), "Learning rates (used as given)."),
    "weight_decay": (flags.FloatParser(), "Weight decays."),
}


class ListOf(flags.ListParser):
    """A comma-separated list flag whose items absl's `item` parser converts and checks."""

    def __init__(self, item):
        super().__init__()
        self.item = item

    def parse(self, argument):
        return [self.item.parse(value) for value in super().parse(argument)]

    def flag_type(self):
        return f"list of {self.item.flag_type()}"


def define_flags(fv):
    """`tfresnet tune` flags. The space picks the models, each trial has its own run
    directory, and a search always resumes: no --model, --run_dir or --resume."""
    train_cli.define_shared_flags(fv, validation_size=0.1)
    flags.DEFINE_bool(
        "overwrite", False, "Delete the search in --directory and start again.", flag_values=fv
    )
    flags.DEFINE_bool(
        "export", True, "Export the best model for TF Serving (search dir/export/).", flag_values=fv
    )
    flags.DEFINE_enum("tuner", "random", tuning.TUNERS, "KerasTuner algorithm.", flag_values=fv)
    flags.DEFINE_string(
        "directory", None, "Search directory; default runs/tune-<tuner>-<data>.", flag_values=fv
    )
    flags.DEFINE_enum(
        "family", None, specs.FAMILIES, "Model family; default by image size.", flag_values=fv
    )
    for name, (item, help_text) in DIMENSIONS.items():
        flags.DEFINE(
            ListOf(item),
            name,
            None,
            f"{help_text} (a comma separated list)",
            flag_values=fv,
            serializer=flags.CsvListSerializer(","),
        )
    flags.DEFINE_integer(
        "max_trials",
        None,
        "Trials; default the whole grid, or 10 (random/bayesian).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "objective", "val_accuracy", "Validation metric to select on.", flag_values=fv
    )
    flags.DEFINE_integer("hyperband_factor", 3, "Hyperband reduction factor.", flag_values=fv)
    flags.DEFINE_integer("hyperband_iterations", 1, "Hyperband iterations.", flag_values=fv)
    flags.DEFINE_integer(
        "bayesian_initial_points", None, "Random trials before the Bayesian model.", flag_values=fv
    )
    flags.DEFINE_integer(
        "max_retries_per_trial", 0, "Reruns of a trial that crashed unexpectedly.", flag_values=fv
    )
    flags.DEFINE_integer(
        "max_consecutive_failed_trials",
        3,
        "Stop after this many failures in a row.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "evaluate_best", True, "Test error of the best trial, after selection.", flag_values=fv
    )


def space_from_flags(fv):
    """The tuner's default space with the dimensions given on the command line replaced."""
    given = {name: tuple(fv[name].value) for name in DIMENSIONS if fv[name].value is not None}
    return dataclasses.replace(tuning.default_space(fv.tuner), family=fv.family, **given)


def config_from_flags(fv):
    return tuning.TuneConfig(
        train_cli.config_from_flags(fv, skip=DIMENSIONS),  # lists here: the space's
        tuner=fv.tuner,
        space=space_from_flags(fv),
        directory=fv.directory,
        max_trials=fv.max_trials,
        objective=fv.objective,
        hyperband_factor=fv.hyperband_factor,
        hyperband_iterations=fv.hyperband_iterations,
        bayesian_initial_points=fv.bayesian_initial_points,
        max_retries_per_trial=fv.max_retries_per_trial,
        max_consecutive_failed_trials=fv.max_consecutive_failed_trials,
        evaluate_best=fv.evaluate_best,
        overwrite=fv.overwrite,
    )


def run(fv, args):
    del args  # none: main refuses them
    results = tuning.search(config_from_flags(fv))
    if "worker" in results:
        print(f"worker {results['worker']}: no trials left")
    else:
        print(f"\nsearch directory: {results['directory']}")
    return 0
