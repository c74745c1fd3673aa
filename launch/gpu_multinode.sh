#!/usr/bin/env bash
# Run `python -m jdistill.main` as one process per GPU node.
#
# Under Slurm (sbatch or salloc), one task per node:
#   sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/gpu_multinode.sh \
#       --config=configs/kd.py --config.teacher.path=/shared/llama-3.1-8b \
#       --config.student.path=/shared/llama-3.2-1b --config.data.train_files=/shared/train.jsonl \
#       --config.mesh.fsdp=8 --config.mesh.data=-1 --workdir=/shared/runs/kd
#   jax.distributed.initialize() reads the coordinator, process count and id from Slurm.
#
# Without Slurm, start it on every node with the coordinator (node 0's host:port), the
# number of processes and this node's index:
#   COORDINATOR=10.0.0.1:1234 NUM_PROCESSES=4 PROCESS_ID=0 launch/gpu_multinode.sh --config=...
#
# Each process writes its log to ${LOG_DIR:-logs}/process-<id>.log. Set DRY_RUN=1 to print
# the command instead of running it.
set -euo pipefail

python=${PYTHON:-python3}
log_dir=${LOG_DIR:-logs}
args=("$@" "--config.distributed.enabled=true")

if [[ -n "${COORDINATOR:-}" ]]; then
    : "${NUM_PROCESSES:?set NUM_PROCESSES with COORDINATOR}"
    : "${PROCESS_ID:?set PROCESS_ID with COORDINATOR}"
    args+=("--config.distributed.coordinator_address=$COORDINATOR"
           "--config.distributed.num_processes=$NUM_PROCESSES"
           "--config.distributed.process_id=$PROCESS_ID")
    process_id=$PROCESS_ID
    launcher=()
elif [[ -n "${SLURM_JOB_ID:-}" ]]; then
    process_id='${SLURM_PROCID}'
    launcher=(srun --kill-on-bad-exit=1)
else
    echo "gpu_multinode.sh: run under Slurm, or set COORDINATOR, NUM_PROCESSES and PROCESS_ID" >&2
    exit 2
fi

command=("$python" -m jdistill.main "${args[@]}")
quoted=$(printf '%q ' "${command[@]}")
inner="mkdir -p $log_dir && ${quoted}2>&1 | tee $log_dir/process-$process_id.log"
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s\n' "${launcher[*]:-} bash -c '$inner'"
    exit 0
fi
exec "${launcher[@]}" bash -c "$inner"
