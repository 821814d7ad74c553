"""Training recipes: the paper's two, in the paper's own units (iterations at its batch size),
and `fast`, the published tricks for reaching a good accuracy in few epochs.

CIFAR (Sec. 4.2): SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and
48k iterations, stop at 64k; for ResNet-110 and deeper, lr 0.01 until training error is below 80%
(about 400 iterations), then 0.1 — here a fixed 400-iteration warm-up, scaled with the schedule.
ImageNet (Sec. 3.4): batch 256, lr 0.1 divided by 10 when the error plateaus, 60e4 iterations,
weight decay 1e-4 — here the usual fixed drops at 30/60/90 of 120 epochs (150k/300k/450k).

A shorter run (`--budget`, `--epochs`, `--steps`) scales every boundary by the same factor, so a
1% budget is the same schedule shape in 1% of the iterations.

Fast (`--recipe=fast`): its own length in epochs, and each trick a field a run may switch off
(`TRICKS`; the flag of the same name; the paper's value turns it off). docs/training.md has the
table of tricks, their values and their sources (Bag of Tricks, Goyal et al. 2017, airbench).
"""

import dataclasses
import math

import keras


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    batch_size: int  # the paper's batch; the learning rate is scaled for other batches
    learning_rate: float  # at batch_size
    momentum: float
    weight_decay: float
    total_steps: int  # iterations at batch_size
    boundaries: tuple  # iterations where lr is divided by `decay`
    decay: float = 0.1
    warmup_steps: int = 0  # iterations at warmup_lr first (deep nets only)
    warmup_lr: float = 0.01
    warmup_min_depth: int = 110  # the paper warms up ResNet-110 and deeper
    epochs: int | None = None  # the recipe's own length; None: `total_steps` (the paper's)
    # The tricks (fields of TrainConfig too, where None means the recipe's value):
    lr_schedule: str = "steps"  # "steps": divided by `decay` at `boundaries`; "cosine"
    warmup_epochs: float = 0.0  # linear warm-up from 0 before the cosine decay
    label_smoothing: float = 0.0
    zero_init_residual: bool = False
    nesterov: bool = False
    ema_momentum: float = 0.0  # 0: no moving average of the weights
    test_flip: bool = False  # average the prediction of an image and of its mirror at the end
    # Not a trick: the paper's test curve after every epoch, for plots only (docs/training.md).
    eval_test_each_epoch: bool = True


LR_SCHEDULES = ("steps", "cosine")
# The recipe fields a run's config may override (TrainConfig has a field of each name).
TRICKS = (
    "zero_init_residual",
    "label_smoothing",
    "lr_schedule",
    "warmup_epochs",
    "nesterov",
    "ema_momentum",
    "test_flip",
)
# The recipe fields a run's config may override: the tricks and the test curve.
OVERRIDES = (*TRICKS, "eval_test_each_epoch")

CIFAR = Recipe("cifar", 128, 0.1, 0.9, 1e-4, 64_000, (32_000, 48_000), warmup_steps=400)
RECIPES = {
    "cifar": CIFAR,
    "imagenet": Recipe("imagenet", 256, 0.1, 0.9, 1e-4, 600_000, (150_000, 300_000, 450_000)),
    # The paper's CIFAR network and step shape (for --lr_schedule=steps) with the tricks on, for
    # ten minutes on 2 CPU cores: 12 epochs beat 8 on validation (experiments/results/
    # time_to_accuracy). The other values are the literature's until the search sets them.
    "fast": dataclasses.replace(
        CIFAR,
        name="fast",
        batch_size=256,
        learning_rate=0.2,
        weight_decay=5e-4,
        epochs=12,
        lr_schedule="cosine",
        warmup_epochs=1.0,
        label_smoothing=0.1,
        zero_init_residual=True,
        nesterov=True,
        test_flip=True,
        eval_test_each_epoch=False,
    ),
}


def get_recipe(name):
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; allowed: {', '.join(RECIPES)}.")
    return RECIPES[name]


def with_overrides(recipe: Recipe, overrides: dict) -> Recipe:
    """`recipe` with the `OVERRIDES` that `overrides` (a config's fields) set to something other
    than None; other keys are ignored."""
    changes = {k: overrides[k] for k in OVERRIDES if overrides.get(k) is not None}
    return dataclasses.replace(recipe, **changes)


def resolve(name: str, overrides: dict, *, flips: bool) -> Recipe:
    """The recipe `name` with a run's `overrides` (`with_overrides`), for data whose images keep
    their label when mirrored (`flips`) or not: there, test_flip is off unless asked for, and
    asking for it (or for `export_test_flip`) is a ValueError."""
    recipe = with_overrides(get_recipe(name), overrides)
    if not flips:
        for key in ("test_flip", "export_test_flip"):
            if overrides.get(key):
                raise ValueError(
                    f"{key}: this data set's images are not trained mirrored (a mirror image "
                    "may be another class, as a mirrored digit is), so a prediction cannot be "
                    f"averaged with its mirror's; leave --{key} out."
                )
        recipe = dataclasses.replace(recipe, test_flip=False)
    return recipe


def check_fraction(name: str, value) -> None:
    """A check (`config.setting`): a number in [0, 1)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and 0 <= value < 1):
        raise ValueError(f"{name} must be a number >= 0 and < 1; got {value}.")


def tricks(recipe: Recipe, baseline: Recipe = CIFAR) -> dict:
    """{field: the baseline's value} for each setting where `recipe` differs from `baseline`
    (the paper's CIFAR recipe): what turns each of its tricks off, one at a time. The batch
    size and weight decay count as tricks; the length and the schedule's shape do not."""
    names = (*TRICKS, "batch_size", "weight_decay")
    return {k: getattr(baseline, k) for k in names if getattr(recipe, k) != getattr(baseline, k)}


def paper_schedule(recipe, total_steps, *, depth, learning_rate=None):
    """A `PiecewiseConstantDecay` over `total_steps`, the recipe's boundaries scaled to fit."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}.")
    lr = recipe.learning_rate if learning_rate is None else learning_rate
    scale = total_steps / recipe.total_steps
    boundaries = [max(1, round(b * scale)) for b in recipe.boundaries]
    values = [lr * recipe.decay**i for i in range(len(boundaries) + 1)]
    if depth >= recipe.warmup_min_depth and recipe.warmup_steps:
        warmup = max(1, round(recipe.warmup_steps * scale))
        boundaries = [warmup] + boundaries
        values = [recipe.warmup_lr * lr / recipe.learning_rate] + values
    # Boundaries must increase strictly; tiny runs can collapse them.
    for i in range(1, len(boundaries)):
        boundaries[i] = max(boundaries[i], boundaries[i - 1] + 1)
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def schedule(recipe, total_steps, *, depth, steps_per_epoch, learning_rate=None):
    """The recipe's learning-rate schedule over `total_steps`: `paper_schedule` ("steps"), or
    ("cosine") a linear warm-up from 0 to `learning_rate` over `warmup_epochs`, then a cosine
    decay to 0 at the last step (Keras' `CosineDecay`)."""
    if recipe.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown lr_schedule {recipe.lr_schedule!r}; allowed: {LR_SCHEDULES}.")
    if recipe.lr_schedule == "steps":
        return paper_schedule(recipe, total_steps, depth=depth, learning_rate=learning_rate)
    lr = recipe.learning_rate if learning_rate is None else learning_rate
    warmup = min(total_steps - 1, round(recipe.warmup_epochs * steps_per_epoch))
    if warmup < 1:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps - warmup, warmup_target=lr, warmup_steps=warmup
    )


def optimizer(recipe, schedule):
    """SGD with the recipe's momentum (Nesterov's, if it says so) and, with `ema_momentum`, a
    moving average of the weights that `finalize_weights` puts into the model at the end (weight
    decay is in the kernel regularisers). Keras' `fit` puts it in when it returns, so a run
    resumed in mid-epoch (two `fit`s) would train on from the average: here that does nothing
    (the optimizer's config is unchanged, so a saved model loads as a plain SGD)."""
    ema = recipe.ema_momentum > 0
    sgd = keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        use_ema=ema,
        ema_momentum=recipe.ema_momentum if ema else 0.99,
    )
    if ema:
        sgd.finalize_variable_values = lambda var_list: None
    return sgd


def finalize_weights(model) -> bool:
    """Put the optimizer's moving average of the weights into `model` (where it keeps one);
    whether it did. Doing it again gives the same weights, so a finish redone after a kill
    evaluates and saves what the first try would have."""
    opt = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under loss scaling
    if opt is None or not opt.use_ema:
        return False
    if not opt.built:
        opt.build(model.trainable_variables)
    keras.optimizers.Optimizer.finalize_variable_values(opt, model.trainable_variables)
    return True


def loss(recipe):
    """Sparse cross-entropy, with the recipe's label smoothing where it has some (the target
    is (1 - e) one-hot + e / classes; `layers.SparseCrossentropy`)."""
    if not recipe.label_smoothing:
        return "sparse_categorical_crossentropy"
    from tfresnet import layers

    return layers.SparseCrossentropy(label_smoothing=recipe.label_smoothing)


# The most iterations (and so epochs) a run may have: far beyond any real schedule (ImageNet's
# is 600k), and small enough that every step count fits the integers TF and Keras keep them in.
MAX_STEPS = 2**31 - 1


def check_length(budget=None, epochs=None, steps=None):
    """ValueError unless at most one of `budget`, `epochs`, `steps` is given, within range."""
    if sum(v is not None for v in (budget, epochs, steps)) > 1:
        raise ValueError("Give at most one of budget, epochs and steps.")
    for name, value in (("epochs", epochs), ("steps", steps)):
        if value is not None and not 1 <= value <= MAX_STEPS:
            raise ValueError(f"{name} must be between 1 and {MAX_STEPS:,}; got {value}.")
    if budget is not None and not 0 < budget < math.inf:
        raise ValueError(f"budget must be > 0 (a fraction of the paper's schedule); got {budget}.")


def total_steps(recipe, *, steps_per_epoch, batch_size, budget=None, epochs=None, steps=None):
    """Iterations to train for: explicit `steps`, else `epochs`, else `budget` x the recipe's
    (its iterations at its own batch size, so the epochs stay the same when the batch changes;
    for a recipe of its own `epochs`, a share of those). At most `MAX_STEPS`, else ValueError."""
    check_length(budget, epochs, steps)
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = int(epochs) * steps_per_epoch
    elif recipe.epochs is not None:  # a recipe of its own length: a budget is a share of it
        budget = 1.0 if budget is None else budget
        total = max(1, math.ceil(recipe.epochs * steps_per_epoch * budget))
    else:
        budget = 1.0 if budget is None else budget
        total = max(1, math.ceil(recipe.total_steps * budget * recipe.batch_size / batch_size))
    if total > MAX_STEPS:
        raise ValueError(
            f"That run is {total:,} training steps; at most {MAX_STEPS:,} are allowed. Give a "
            "smaller --budget or --epochs."
        )
    return total
