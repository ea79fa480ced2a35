#!/usr/bin/env bash
# Training and inference speed beside OpenSTL's PyTorch on this CPU (issue: training speed):
# the quickstart TAU at batch 16, the full Moving MNIST TAU at batch 2, a small gSTA and a small
# PredRNN, each side by side in one process (`tau-jax benchmark --openstl`, which alternates the two
# frameworks' repeats: this machine's speed drifts by ~20% within minutes). Run it alone on the
# machine (a second process ruins both timings).
#
#   experiments/cpu_speed.sh PATH_TO_OPENSTL [SUFFIX]
#
# writes experiments/results/benchmark_{quickstart,mmnist_tau_b2,gsta_small,predrnn_small}_cpu_fp32SUFFIX.json
set -euo pipefail
openstl=${1:?usage: experiments/cpu_speed.sh PATH_TO_OPENSTL [SUFFIX]}
suffix=${2:-}
out=experiments/results
tau-jax benchmark --config configs/mmnist/quickstart.py --batch 16 --openstl "$openstl" \
    --repeats 7 --steps 3 --infer_batch 100 --output "$out/benchmark_quickstart_cpu_fp32$suffix.json"
tau-jax benchmark --config configs/mmnist/tau.py --batch 2 --openstl "$openstl" --repeats 5 \
    --steps 1 --warmup 1 --infer_batch 4 --infer_steps 1 \
    --output "$out/benchmark_mmnist_tau_b2_cpu_fp32$suffix.json"
tau-jax benchmark --config configs/mmnist/gsta.py --config.model.hid_S=16 \
    --config.model.hid_T=128 --config.model.N_T=4 --batch 4 --openstl "$openstl" --repeats 7 \
    --steps 3 --infer_batch 16 --infer_steps 2 --output "$out/benchmark_gsta_small_cpu_fp32$suffix.json"
tau-jax benchmark --config configs/mmnist/predrnn.py --config.model.num_hidden="(32, 32)" \
    --batch 4 --openstl "$openstl" --repeats 7 --steps 3 --infer_batch 16 --infer_steps 2 \
    --output "$out/benchmark_predrnn_small_cpu_fp32$suffix.json"
