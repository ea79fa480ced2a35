#!/usr/bin/env bash
# The GPU benchmark set of issue #7, in one go: Moving MNIST TAU (OpenSTL's config, batch 16)
# in float32 and bf16 beside OpenSTL's PyTorch model, both depthwise-conv formulations (to settle
# what dw_impl='auto' picks on GPU), PredRNN beside OpenSTL's, and a profile. Every run writes
# experiments/results/benchmark_<name>.json; the README table is regenerated at the end.
#
#   experiments/gpu_benchmarks.sh PATH_TO_OPENSTL_CHECKOUT [SUFFIX]
#
# Needs a GPU build of jax (`pip install -e ".[cuda,openstl]"`) and a checkout of
# https://github.com/chengtan9907/OpenSTL (not part of this repository).
set -euo pipefail
cd "$(dirname "$0")/.."
openstl=${1:?usage: experiments/gpu_benchmarks.sh PATH_TO_OPENSTL_CHECKOUT [SUFFIX]}
suffix=${2:-gpu}
out=experiments/results
bench() {  # NAME ARGS...
  local name=$1
  shift
  tau-jax benchmark --repeats 5 --steps 20 --output "$out/benchmark_${name}_${suffix}.json" "$@"
}
bench mmnist_tau_fp32 --config configs/mmnist/tau.py --openstl "$openstl" --breakdown
bench mmnist_tau_bf16 --config configs/mmnist/tau.py --openstl "$openstl" --precision bf16 --breakdown
for impl in lax taps; do
  for precision in fp32 bf16; do
    bench "mmnist_tau_${precision}_dw_${impl}" --config configs/mmnist/tau.py \
      --precision "$precision" --config.model.dw_impl="$impl"
  done
done
bench mmnist_predrnn_fp32 --config configs/mmnist/predrnn.py --openstl "$openstl"
bench mmnist_predrnn_bf16 --config configs/mmnist/predrnn.py --openstl "$openstl" --precision bf16
bench mmnist_tau_bf16_profile --config configs/mmnist/tau.py --precision bf16 --repeats 1 \
  --profile "runs/profile_${suffix}"
python experiments/benchmark_table.py --write
