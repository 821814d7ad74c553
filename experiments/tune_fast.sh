#!/usr/bin/env bash
# The fast recipe's first real search (issue 32, item 3): Hyperband over its knobs for ResNet-20
# on Fashion-MNIST, chosen on 5,000 training images held out for validation (never the test
# set, which is measured once, for the selected trial only, after the search).
#
#   nohup nice -n 19 bash experiments/tune_fast.sh > tune_fast.log 2>&1 &
#
# How long: Hyperband with --epochs=9 (the most one trial trains) and factor 3 runs brackets of
# 9 trials x 1 epoch -> 3 x 3 -> 1 x 9, 5 x 3 -> 2 x 9 and 3 x 9: 23 trials and 75 epochs of
# training (a promoted trial trains only the epochs its round adds, from its parent's weights),
# plus about 30 s per trial to build, trace and validate: about 1.5 hours on an otherwise idle
# 2-core machine at ~60 s an epoch (--hyperband_iterations=2 repeats it with new samples).
# Running the same command again continues the search where it stopped (finished trials are
# not trained again). Extra flags pass through and override (the test's smoke run on digits:
# tests/test_tuning.py::test_the_fast_recipe_search_script_runs_on_digits).
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
DATA=(--dataset=fashion_mnist --validation_size=5000 --precision=mixed_bfloat16)
# ResNet-20 (option A, post-activation), the fast recipe; what it searches, one flag each.
SPACE=(--depth=20 --shortcut=A --preact=false --width_multiplier=1
       --learning_rate=0.1,0.2,0.4 --batch_size=128,256 --weight_decay=1e-4,5e-4
       --label_smoothing=0,0.1 --warmup_epochs=0,1)
SEARCH=(--tuner=hyperband --epochs=9 --hyperband_factor=3 --hyperband_iterations=1
        --objective=val_accuracy --recipe=fast --seed=0
        --directory=experiments/results/tune_fast)
exec python -m tfresnet.cli tune "${DATA[@]}" "${SPACE[@]}" "${SEARCH[@]}" "$@"
