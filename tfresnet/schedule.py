"""How long and how fast a run trains: its `Schedule`, resolved once from the config and the data,
with the recipe (and its tricks) behind it."""

import dataclasses
import math

from tfresnet import distribute, recipes, specs

DEFAULT_EPOCHS = {"digits": 30}  # the embedded set's default budget: 25-60 s on 2 CPU cores
# The most training steps per tf.function call that `steps_per_execution=None` picks.
AUTO_STEPS_PER_EXECUTION = {"tpu": 32, "other": 8}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and how fast a run trains, and its recipe (with the config's tricks)."""

    recipe: recipes.Recipe
    batch_size: int
    learning_rate: float
    weight_decay: float
    epochs: int
    steps: int
    steps_per_epoch: int
    steps_per_execution: int = 1


def _steps_per_execution(config, steps_per_epoch, replicas, tpu):
    """Training steps per tf.function call: a divisor of the epoch's steps (Keras 3.15 runs whole
    executions, so one that does not divide an epoch would run into the next). More steps per
    call save the host's per-step round trip; Keras cannot do it under mirrored strategies."""
    multi = replicas > 1 and not tpu
    wanted = config.steps_per_execution
    if wanted is None:
        limit = 1 if multi else AUTO_STEPS_PER_EXECUTION["tpu" if tpu else "other"]
        return max(d for d in range(1, limit + 1) if steps_per_epoch % d == 0)
    if wanted > 1 and multi:
        raise ValueError(
            f"steps_per_execution={wanted} does not work with {replicas} replicas of a mirrored "
            "strategy in Keras 3.15 (keras-team/keras#19246); use 1 there (TPUs take any value)."
        )
    if steps_per_epoch % wanted:
        fits = [d for d in range(1, wanted) if steps_per_epoch % d == 0]
        raise ValueError(
            f"steps_per_execution={wanted} does not divide the {steps_per_epoch} steps of an "
            f"epoch (Keras would run past the epoch's end); use one of {fits[-3:]} or leave it "
            "unset to pick one."
        )
    return wanted


def plan_schedule(config, info, strategy) -> Schedule:
    """The run's `Schedule`; raises ValueError for settings that cannot train on this data."""
    recipe = pick_recipe(config, info)
    # Before anything is written (and before --overwrite deletes the old run), not at the build.
    specs.check_input_shape(info.image_shape, specs.resolve_spec(config.model), config.model)
    batch_size = config.batch_size or recipe.batch_size
    distribute.per_replica_batch_size(batch_size, strategy)
    if info.sizes["train"] < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {info.sizes['train']} training examples "
            f"of {info.name}; pass a smaller --batch_size."
        )
    steps_per_epoch = info.sizes["train"] // batch_size
    length = {"budget": config.budget, "epochs": config.epochs, "steps": config.steps}
    if all(v is None for v in length.values()) and recipe.epochs is None:
        length["epochs"] = DEFAULT_EPOCHS.get(config.dataset)  # None: the full paper schedule
    total = recipes.total_steps(
        recipe, steps_per_epoch=steps_per_epoch, batch_size=batch_size, **length
    )
    epochs = max(1, math.ceil(total / steps_per_epoch))
    lr = config.learning_rate or distribute.scaled_learning_rate(
        recipe.learning_rate, batch_size, recipe.batch_size, config.lr_rule
    )
    return Schedule(
        recipe=recipe,
        batch_size=batch_size,
        learning_rate=lr,
        weight_decay=recipe.weight_decay if config.weight_decay is None else config.weight_decay,
        epochs=epochs,
        steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        steps_per_execution=_steps_per_execution(
            config, steps_per_epoch, strategy.num_replicas_in_sync, distribute.is_tpu(strategy)
        ),
    )


def pick_recipe(config, info) -> recipes.Recipe:
    """The config's recipe (unset: by the data's style, CIFAR- or ImageNet-sized), with the
    tricks its config sets (`recipes.resolve`)."""
    name = config.recipe or ("cifar" if info.style == "cifar" else "imagenet")
    return recipes.resolve(name, dataclasses.asdict(config), flips=info.flip)


def learning_rate_schedule(config, plan: Schedule):
    """The recipe's learning rate over the run's `plan.steps` (`recipes.schedule`)."""
    return recipes.schedule(
        plan.recipe,
        plan.steps,
        depth=specs.resolve_spec(config.model).depth,
        steps_per_epoch=plan.steps_per_epoch,
        learning_rate=plan.learning_rate,
    )
