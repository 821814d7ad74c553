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


def total_steps(recipe, *, steps_per_epoch, batch_size, budget=None, epochs=None, steps=None):
    """Iterations to train for: explicit `steps`, else `epochs`, else `budget` x the recipe's.

    A budget counts the recipe's iterations at its own batch size, so the number of epochs stays
    the same when the batch changes.
    """
    given = [v for v in (budget, epochs, steps) if v is not None]
    if len(given) > 1:
        raise ValueError("Give at most one of budget, epochs and steps.")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}.")
        return int(steps)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {epochs}.")
        return int(epochs) * steps_per_epoch
    budget = 1.0 if budget is None else budget
    if not 0 < budget < math.inf:
        raise ValueError(f"budget must be > 0 (a fraction of the paper's schedule); got {budget}.")
    return max(1, math.ceil(recipe.total_steps * budget * recipe.batch_size / batch_size))
