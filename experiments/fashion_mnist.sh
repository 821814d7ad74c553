#!/usr/bin/env bash
# Every Fashion-MNIST run behind experiments/README.md, most important first. Each run resumes
# from its backup and each finished run is reused, so running this again continues where it
# stopped. Extra flags pass through to every script (e.g. --results_dir=...).
#
#   nohup nice -n 19 bash experiments/fashion_mnist.sh > fashion_mnist.log 2>&1 &
#
# Budgets (fractions of the paper's 64k iterations at batch 128; one epoch is 468 iterations):
# 0.03 (5 epochs) was the pilot: it shows the plain nets' degradation but leaves ResNet-56
# under-trained; 0.1 (14 epochs) is the main set, where ResNet-56 still ends 1.4 points (seed 0;
# 2.1 over two seeds) above ResNet-20 in training error; 0.3 (42 epochs), where ResNet-56 is
# still 0.5 points behind; 1 is the paper's whole schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
# TensorFlow's C++ notices (oneDNN, CUDA stubs, dataset hints) would bury the one line per epoch.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
SHORT=(--dataset=fashion_mnist --budget=0.03 --precision=mixed_bfloat16 "$@")
MAIN=(--dataset=fashion_mnist --budget=0.1 --precision=mixed_bfloat16 "$@")

python -m experiments.degradation "${SHORT[@]}" --depths=20,56             # the pilot, seed 0
python -m experiments.degradation "${MAIN[@]}" --depths=20,56              # key nets, seed 0
LONG=(--dataset=fashion_mnist --budget=0.3 --precision=mixed_bfloat16 "$@")
python -m experiments.depth "${LONG[@]}" --depths=20,56                    # ResNet-56 vs 20
python -m experiments.degradation "${MAIN[@]}" --depths=20,56 --seeds=2    # and seed 1
python -m experiments.layer_responses "${MAIN[@]}"                         # Fig. 7 on those
python -m experiments.layer_responses "${SHORT[@]}"                        # and on the pilot
python -m experiments.degradation "${MAIN[@]}"                             # + depths 32, 44
python -m experiments.shortcuts "${MAIN[@]}" --depths=56                   # B and C at 56
python -m experiments.depth "${MAIN[@]}"                                   # + ResNet-110
# The paper's whole schedule (64k iterations at batch 128): ResNet-20 (2.75 h of training here),
# then ResNet-56 (about 6-7 h), where "deeper ResNets are no worse" gets its real test.
WHOLE=(--dataset=fashion_mnist --budget=1 --precision=mixed_bfloat16 "$@")
python -m experiments.depth "${WHOLE[@]}" --depths=20      # table of ResNet-20 alone
python -m experiments.depth "${WHOLE[@]}" --depths=20,56   # same table file, + ResNet-56
# Second seeds at the whole schedule (issue 33): ResNet-20 seed 1 (about 2.3 h), then ResNet-56
# seed 1 (about 9 h); the tables then give both seeds.
python -m experiments.depth "${WHOLE[@]}" --depths=20 --seeds=2
python -m experiments.depth "${WHOLE[@]}" --depths=20,56 --seeds=2
