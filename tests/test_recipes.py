import pytest

from tfresnet import recipes

CIFAR = recipes.get_recipe("cifar")


def _lr(schedule, step):
    return float(schedule(step))


def test_cifar_schedule_is_the_papers_at_full_budget():
    schedule = recipes.paper_schedule(CIFAR, 64_000, depth=20)
    assert [_lr(schedule, s) for s in (0, 31_999, 32_001, 47_999, 48_001, 63_999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def test_deep_nets_warm_up_at_001_for_400_iterations():
    schedule = recipes.paper_schedule(CIFAR, 64_000, depth=110)
    assert _lr(schedule, 399) == pytest.approx(0.01)
    assert _lr(schedule, 401) == pytest.approx(0.1)
    assert _lr(recipes.paper_schedule(CIFAR, 64_000, depth=56), 0) == pytest.approx(0.1)


def test_short_budget_scales_every_boundary():
    schedule = recipes.paper_schedule(CIFAR, 640, depth=110)
    assert [_lr(schedule, s) for s in (3, 5, 319, 321, 479, 481)] == pytest.approx(
        [0.01, 0.1, 0.1, 0.01, 0.01, 0.001]
    )


def test_tiny_schedules_keep_boundaries_increasing():
    schedule = recipes.paper_schedule(CIFAR, 2, depth=1202)
    assert list(schedule.boundaries) == sorted(set(schedule.boundaries))


def test_total_steps_from_budget_epochs_or_steps():
    assert recipes.total_steps(CIFAR, steps_per_epoch=351, batch_size=128, budget=1.0) == 64_000
    assert recipes.total_steps(CIFAR, steps_per_epoch=351, batch_size=256, budget=0.5) == 16_000
    assert recipes.total_steps(CIFAR, steps_per_epoch=11, batch_size=128, epochs=30) == 330
    assert recipes.total_steps(CIFAR, steps_per_epoch=11, batch_size=128, steps=7) == 7
    with pytest.raises(ValueError, match="at most one of budget, epochs and steps"):
        recipes.total_steps(CIFAR, steps_per_epoch=1, batch_size=128, epochs=1, steps=1)
    for budget in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="budget must be > 0"):
            recipes.total_steps(CIFAR, steps_per_epoch=1, batch_size=128, budget=budget)


def test_imagenet_schedule_drops_at_30_60_90_of_120_epochs_without_warm_up():
    """Sec. 3.4 at batch 256 (5,005 steps an epoch on 1.28M images): 0.1, divided by 10 at
    150k, 300k and 450k of 600k iterations; no warm-up, however deep."""
    imagenet = recipes.get_recipe("imagenet")
    steps = recipes.total_steps(imagenet, steps_per_epoch=5005, batch_size=256)
    assert steps == 600_000
    assert recipes.total_steps(imagenet, steps_per_epoch=2503, batch_size=512) == 300_000
    schedule = recipes.paper_schedule(imagenet, steps, depth=152)
    probes = (0, 149_999, 150_001, 299_999, 300_001, 449_999, 450_001)
    assert [_lr(schedule, s) for s in probes] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001]
    )


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown recipe 'mnist'; allowed: cifar, imagenet"):
        recipes.get_recipe("mnist")
