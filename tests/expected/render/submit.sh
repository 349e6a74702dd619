#!/bin/bash
# Submit study render-demo: training arrays, their evaluations (task i after training task i),
# chained runs after their parent's task, one report after every evaluation.
# Rendered by `python -m launch.render STUDY.yaml OUT_DIR`; run it from anywhere: bash OUT_DIR/submit.sh
set -euo pipefail
cd "$(dirname "$0")"  # the scripts find their manifests in the submit folder
mkdir -p /studies/render-demo/launch/logs
submit() { local out; out=$(sbatch --parsable "$@"); echo "${out%%;*}"; }  # "id;cluster" -> id

# training array 0: depth 0, 2 run(s), 2 node x 8 proc (8 GPU/node), 8 cpu/proc, 480 GB/node, 2880 min
train_0=$(submit train_0.sbatch)
eval_0=$(submit --dependency=aftercorr:"$train_0" eval_0.sbatch)

# training array 1: depth 0, 1 run(s), 2 node x 1 proc (1 GPU/node), 8 cpu/proc, 60 GB/node, 2880 min
train_1=$(submit train_1.sbatch)
eval_1=$(submit --dependency=aftercorr:"$train_1" eval_1.sbatch)

# training array 2: depth 1, 2 run(s), 2 node x 8 proc (8 GPU/node), 8 cpu/proc, 480 GB/node, 2880 min
train_2=$(submit --hold train_2.sbatch)
scontrol update JobId="${train_2}_0" Dependency=afterok:"${train_0}_0"  # ft_2m_math after ft_2m
scontrol update JobId="${train_2}_1" Dependency=afterok:"${train_0}_1"  # lora_2m_math after lora_2m
scontrol release "$train_2"
eval_2=$(submit --dependency=aftercorr:"$train_2" eval_2.sbatch)

report=$(submit --dependency=afterany:$eval_0:$eval_1:$eval_2 report.sbatch)
echo 'study render-demo'": training $train_0 $train_1 $train_2; evaluation $eval_0 $eval_1 $eval_2; report $report"
