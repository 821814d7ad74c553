"""What defines a search: the search space (`SearchSpace`), its config (`TuneConfig`, saved as
`search.json`) and the objective a trial is selected on."""

import dataclasses
import functools
import json
import math
import os

import keras_tuner

from tfresnet import blocks, specs
from tfresnet import config as config_lib
from tfresnet import train as train_lib
from tfresnet.config import at_least, setting

TUNERS = ("random", "hyperband", "bayesian", "grid")
PAPER_DEPTHS = {
    "cifar": (20, 32, 44, 56, 110),  # 6n+2 with n = 3, 5, 7, 9, 18 (paper Sec. 4.2)
    "imagenet": (18, 34, 50, 101, 152),  # paper Table 1
}
DEFAULT_MAX_TRIALS = 10  # random and bayesian; grid runs its whole grid
# TrainConfig fields each trial sets itself: its own run directory, no test set, a fresh start.
TRIAL_FIELDS = ("run_dir", "eval_test_each_epoch", "resume", "overwrite")


def _as_values(name, value, kind):
    """None, or a non-empty tuple of `kind` values (a single value becomes a 1-tuple)."""
    if value is None:
        return None
    values = tuple(value) if isinstance(value, list | tuple) else (value,)
    if not values:
        raise ValueError(f"{name}: give at least one value, or None.")
    if kind is float:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        values = tuple(float(v) for v in values) if ok else values
    else:
        ok = all(type(v) is kind for v in values)
    if not ok:
        raise ValueError(f"{name} values must be {kind.__name__}s; got {values!r}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice: {values!r}.")
    return values


# A SearchSpace field, listed in --help under the search space.
dimension = functools.partial(setting, group="search space (unset: the tuner's default)")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What to search. Each field: a list of values (searched), one value (fixed) or None.

    None takes the value from the search's base `TrainConfig` (not a hyperparameter); for
    `depth`, None means the family's depths from the paper. The defaults are the whole space;
    `PAPER_GRID` is the paper's depth x shortcut comparison. Each value is checked as the
    `TrainConfig` field of the same name checks it.
    """

    depth: tuple | int | None = dimension(
        None,
        "Depths to search; default the paper's (CIFAR 20,32,44,56,110; ImageNet 18,...,152).",
        item=int,
    )
    shortcut: tuple | str | None = dimension(
        blocks.SHORTCUTS,
        f"Shortcut options among {','.join(blocks.SHORTCUTS)} (none = plain net).",
        item=str,
        choices=blocks.SHORTCUTS,
    )
    preact: tuple | bool | None = dimension(
        (False, True), "Pre-activation: true, false or true,false.", item=bool
    )
    learning_rate: tuple | float | None = dimension(
        (0.05, 0.1, 0.2), "Learning rates (used as given).", item=float
    )
    weight_decay: tuple | float | None = dimension((1e-4, 5e-4), "Weight decays.", item=float)
    batch_size: tuple | int | None = dimension(
        None,
        "Global batch sizes; the recipe's learning rate scales with each unless learning_rate "
        "is searched or fixed too.",
        item=int,
    )
    label_smoothing: tuple | float | None = dimension(
        None, "Label smoothings of the loss (fast recipe: 0.1).", item=float
    )
    warmup_epochs: tuple | float | None = dimension(
        None,
        "Epochs of linear warm-up before the cosine decay (the fast recipe's: 1).",
        item=float,
    )
    width_multiplier: tuple | float | None = dimension(
        None,
        "Width multipliers of every stage's filters (cifar_resnet20:width_multiplier=2).",
        item=float,
        check=at_least(0, "a number", strict=True),
    )
    family: str | None = dimension(
        None, "Model family; default by image size.", choices=specs.FAMILIES
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if field.metadata["item"] is None:
                continue
            values = _as_values(field.name, getattr(self, field.name), field.metadata["item"])
            object.__setattr__(self, field.name, values)
            # A TrainConfig field's values are checked as TrainConfig checks them.
            owner = train_lib.TrainConfig if field.name in TRAIN_DIMENSIONS else SearchSpace
            for value in values or ():
                config_lib.check_value(owner, field.name, value)
        config_lib.check_value(SearchSpace, "family", self.family)
        if self.family is not None:
            self.depths(self.family)

    def depths(self, family: str) -> tuple:
        """The depths to search for `family`, checked against the model table."""
        depths = self.depth or PAPER_DEPTHS[family]
        for depth in depths:
            model_name(family, depth, "A")  # raises, listing the allowed depths
        return depths

    def dimensions(self, family: str) -> tuple:
        """(name, values or None) in field order; the grid varies the last one fastest."""
        return tuple(
            (f.name, self.depths(family) if f.name == "depth" else getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata["item"] is not None
        )

    def grid_size(self, family: str) -> int:
        return math.prod(len(values or (None,)) for _, values in self.dimensions(family))


# SearchSpace dimensions that are TrainConfig fields of the same name, set as they are.
TRAIN_DIMENSIONS = tuple(
    f.name
    for f in dataclasses.fields(SearchSpace)
    if f.name in config_lib.fields_by_name(train_lib.TrainConfig)
)
# TrainConfig fields the search space sets per trial (the rest of the config is shared).
SPACE_FIELDS = ("model", *TRAIN_DIMENSIONS)
# TrainConfig fields that do not define a search (a re-run may change them).
NON_IDENTITY_FIELDS = (*train_lib.NON_IDENTITY_FIELDS, "run_dir", *SPACE_FIELDS)
PAPER_GRID = SearchSpace(preact=None, learning_rate=None, weight_decay=None)


def default_space(tuner: str) -> SearchSpace:
    """grid: the paper's depth x shortcut comparison; the sampling tuners: the whole space."""
    return PAPER_GRID if tuner == "grid" else SearchSpace()


def model_name(family: str, depth: int, shortcut: str) -> str:
    """The model-table name of one trial: `cifar_resnet<d>`, `resnet<d>`, `cifar_plain<d>`, ..."""
    kind = "plain" if shortcut == "none" else "resnet"
    prefix = "cifar_" if family == "cifar" else ""
    if family == "imagenet" and depth not in specs.IMAGENET_DEPTHS:
        raise ValueError(
            f"ImageNet-family depth must be one of {sorted(specs.IMAGENET_DEPTHS)}; got {depth}."
        )
    name = f"{prefix}{kind}{depth}"
    specs.get_spec(name)  # CIFAR: 6n+2; the error lists what is allowed
    return name


def shared_train_config() -> train_lib.TrainConfig:
    """The `TrainConfig` a search starts from: the defaults, with 0.1 of the training set held
    out to select on (the test set never is)."""
    return train_lib.TrainConfig(validation_size=0.1)


@dataclasses.dataclass
class TuneConfig:
    """Everything that defines a search; saved as `search.json` in its directory."""

    train: train_lib.TrainConfig = setting(
        default_factory=shared_train_config,
        help="What every trial shares: data, recipe, budget, strategy (not SPACE_FIELDS, "
        "TRIAL_FIELDS).",
    )
    tuner: str = setting("random", "KerasTuner algorithm.", group="search", choices=TUNERS)
    space: SearchSpace | None = setting(None, "What to search; None: default_space(tuner).")
    directory: str | None = setting(
        None, "Search directory; default runs/tune-<tuner>-<data>.", group="search"
    )
    max_trials: int | None = setting(
        None,
        f"Trials; default the whole grid, or {DEFAULT_MAX_TRIALS} (random/bayesian).",
        group="search",
        check=at_least(1),
    )
    objective: str = setting(
        "val_accuracy",
        "Validation metric to select on (a metric a trial logs, or name:min|max), or "
        "time_to:ACCURACY: training seconds until the validation accuracy first reached ACCURACY "
        "(needs --trial_time_budget, which a trial that never reaches it scores).",
        group="search",
        check=lambda name, value: make_objective(value),
    )
    trial_time_budget: float | None = setting(
        None,
        "Seconds one trial may train: it stops at the end of the epoch in which they are spent "
        "and is reported with the epochs it ran; default no limit.",
        group="search",
        check=at_least(0, "a number of seconds", strict=True),
    )
    hyperband_factor: int = setting(
        3,
        "Hyperband reduction factor: each round keeps 1/factor of the trials.",
        group="search",
        check=at_least(2, why="each round keeps 1/factor of the trials"),
    )
    hyperband_iterations: int = setting(
        1, "Hyperband iterations.", group="search", check=at_least(1)
    )
    bayesian_initial_points: int | None = setting(
        None,
        "Random trials before the Bayesian model; default KerasTuner's (3 x dimensions).",
        group="search",
        check=at_least(1),
    )
    max_retries_per_trial: int = setting(
        0, "Reruns of a trial that crashed unexpectedly.", group="search", check=at_least(0)
    )
    max_consecutive_failed_trials: int = setting(
        3, "Stop after this many failures in a row.", group="search", check=at_least(1)
    )
    keep_trial_models: bool = setting(
        False,
        "Keep every finished trial's checkpoints and model.keras; default only the best "
        "trial's model (the rest keep config, history, results and logs).",
        group="search",
    )
    evaluate_best: bool = setting(
        True, "Test error of the best trial, after selection.", group="search"
    )
    overwrite: bool = setting(
        False, "Delete the search in --directory and start again.", group="search"
    )

    def __post_init__(self):
        config_lib.check_fields(self)
        if self.space is None:
            self.space = default_space(self.tuner)
        if self.directory is None:
            self.directory = os.path.join(
                "runs", f"tune-{self.tuner}-{train_lib._slug(self.train.dataset)}"
            )
        if not self.train.validation_size and self.objective.startswith("val_"):
            raise ValueError(
                f"objective {self.objective!r} needs a validation split: set validation_size "
                "(e.g. 0.1 of train, or 5000 for the paper's 45k/5k CIFAR-10 split). The test "
                "set is never used for selection."
            )
        if time_to_target(self.objective) is not None:
            if self.trial_time_budget is None:
                raise ValueError(
                    f"objective {self.objective!r} needs --trial_time_budget: the score of a "
                    "trial that never reaches the accuracy (e.g. --trial_time_budget=600)."
                )
            if self.tuner == "hyperband":
                raise ValueError(
                    f"objective {self.objective!r} does not work with hyperband, whose promoted "
                    "trials start from their parent's weights (not one training's time); use "
                    "random, bayesian or grid."
                )
        if self.tuner == "hyperband" and max_epochs(self.train) is None:
            raise ValueError(
                "hyperband counts a trial's budget in epochs: give epochs (the most one trial "
                "trains), not steps or budget."
            )

    def identity(self) -> dict:
        """What must match for a re-run to continue this search."""
        values = dataclasses.asdict(self)
        for name in ("overwrite", "directory", "keep_trial_models"):  # a re-run may change them
            values.pop(name)
        values["train"] = run_identity(values["train"])
        return json.loads(json.dumps(values, default=str))


def run_identity(train: dict) -> dict:
    """A trial config's fields that define what it computes: not `NON_IDENTITY_FIELDS`, nor the
    `TRIAL_FIELDS` that each trial sets for itself."""
    return {k: v for k, v in train.items() if k not in (*NON_IDENTITY_FIELDS, *TRIAL_FIELDS)}


def max_epochs(train: train_lib.TrainConfig) -> int | None:
    """The most epochs one Hyperband trial trains: the base config's epochs; None for a budget
    in steps or a fraction of the paper's (Hyperband counts in epochs)."""
    if train.steps or train.budget:
        return None
    return train.epochs or train_lib.DEFAULT_EPOCHS.get(train.dataset)


# What `train.fit_model` logs each epoch, so what a trial can be selected on.
_EPOCH_METRICS = ("accuracy", "loss", "top5_accuracy")  # and each with val_
OBJECTIVE_METRICS = (*_EPOCH_METRICS, *(f"val_{m}" for m in _EPOCH_METRICS), "weight_decay_loss")
TIME_TO = "time_to"  # --objective=time_to:0.94


def time_to_target(text: str) -> float | None:
    """The validation accuracy of a `time_to:<accuracy>` objective; None for another objective."""
    name, _, value = text.partition(":")
    if name != TIME_TO:
        return None
    try:
        target = float(value)
    except ValueError:
        target = math.nan
    if not 0 < target <= 1:
        raise ValueError(
            f"objective {text!r}: give the validation accuracy to reach, in (0, 1], e.g. "
            f"{TIME_TO}:0.94."
        )
    return target


def time_to_metric(target: float) -> str:
    """The metric a trial logs for `time_to:<target>`: seconds until val_accuracy >= target."""
    return f"{TIME_TO}_{target:g}"


def make_objective(text: str) -> keras_tuner.Objective:
    """A `keras_tuner.Objective` from "val_accuracy", "val_loss", "name:max" / "name:min", or
    "time_to:0.94" (training seconds until the validation accuracy first reached 0.94; lower is
    better).

    The direction is inferred here, not by KerasTuner, which builds a Keras metric to find it
    and so starts TensorFlow before a mirrored strategy could split the CPU.
    """
    target = time_to_target(text)
    if target is not None:
        return keras_tuner.Objective(time_to_metric(target), "min")
    name, _, direction = text.partition(":")
    if name not in OBJECTIVE_METRICS:
        raise ValueError(f"objective {text!r}: a trial logs {', '.join(OBJECTIVE_METRICS)}.")
    direction = direction or ("min" if name.endswith("loss") else "max")
    if direction not in ("min", "max"):
        raise ValueError(
            f"objective {text!r}: give the direction, {name}:max or {name}:min (min or max)."
        )
    return keras_tuner.Objective(name, direction)
