#!/usr/bin/env bash
# Train and evaluate every recipe of experiments/reproduce in turn (days of GPU time: README.md).
# A recipe whose workdir already holds a run resumes from its newest checkpoint.
#
#   experiments/reproduce/run_all.sh [RUNS_DIR] [flags for every run]
#   e.g. experiments/reproduce/run_all.sh runs/reproduce --config.data.data_dir=/data/tfds
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-runs/reproduce}
shift $(( $# > 0 ? 1 : 0 ))
recipes=(  # FILE or FILE:RECIPE (an ablation of another recipe than mmnist_tau_200ep)
  mmnist_tau_200ep ablation_conv_baseline ablation_no_sa ablation_no_da ablation_no_ddr
  taxibj_tau ablation_conv_baseline:taxibj_tau ablation_no_sa:taxibj_tau
  ablation_no_da:taxibj_tau ablation_no_ddr:taxibj_tau
  kth_tau_10to20 kth_tau_10to40
)
for recipe in "${recipes[@]}"; do
  file=${recipe%%:*}
  argument=${recipe#"$file"}  # '' or ':RECIPE'
  workdir="$runs/$file${argument/:/_}"
  echo "== $recipe -> $workdir"
  tau-jax train --config "experiments/reproduce/$file.py$argument" --workdir "$workdir" "$@"
done
