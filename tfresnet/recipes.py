"""The paper's training recipes, in the paper's own units (iterations at its batch size).

CIFAR (Sec. 4.2): SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and
48k iterations, stop at 64k; for ResNet-110 and deeper, lr 0.01 until training error is below 80%
(about 400 iterations), then 0.1 — here a fixed 400-iteration warm-up, scaled with the schedule.
ImageNet (Sec. 3.4): batch 256, lr 0.1 divided by 10 when the error plateaus, 60e4 iterations,
weight decay 1e-4 — here the usual fixed drops at 30/60/90 of 120 epochs (150k/300k/450k).

A shorter run (`--budget`, `--epochs`, `--steps`) scales every boundary by the same factor, so a
1% budget is the same schedule shape in 1% of the iterations.
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


RECIPES = {
    "cifar": Recipe("cifar", 128, 0.1, 0.9, 1e-4, 64_000, (32_000, 48_000), warmup_steps=400),
    "imagenet": Recipe("imagenet", 256, 0.1, 0.9, 1e-4, 600_000, (150_000, 300_000, 450_000)),
}


def get_recipe(name):
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; allowed: {', '.join(RECIPES)}.")
    return RECIPES[name]


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


def optimizer(recipe, schedule):
    """SGD with the recipe's momentum; weight decay is in the model's kernel regularisers."""
    return keras.optimizers.SGD(learning_rate=schedule, momentum=recipe.momentum)


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
    """Iterations to train for: explicit `steps`, else `epochs`, else `budget` x the recipe's.

    A budget counts the recipe's iterations at its own batch size, so the number of epochs stays
    the same when the batch changes. At most `MAX_STEPS`, else ValueError.
    """
    check_length(budget, epochs, steps)
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = int(epochs) * steps_per_epoch
    else:
        budget = 1.0 if budget is None else budget
        total = max(1, math.ceil(recipe.total_steps * budget * recipe.batch_size / batch_size))
    if total > MAX_STEPS:
        raise ValueError(
            f"That run is {total:,} training steps; at most {MAX_STEPS:,} are allowed. Give a "
            "smaller --budget or --epochs."
        )
    return total
