#!/usr/bin/env bash
# Run `python -m jdistill.main` on every worker of a Cloud TPU VM slice.
#
# Usage:
#   launch/tpu_vm.sh [--dry-run] [--no-install] TPU_NAME ZONE -- <jdistill.main arguments>
#
# Example (a v5e-32 slice, checkpoints on GCS, resuming after preemption by rerunning):
#   launch/tpu_vm.sh my-v5e europe-west4-b -- --config=configs/kd.py \
#       --config.teacher.path=/mnt/models/qwen2.5-7b --config.student.path=/mnt/models/qwen2.5-1.5b \
#       --config.data.train_files=/mnt/data/train.jsonl --config.mesh.fsdp=-1 --config.mesh.data=1 \
#       --config.train.checkpoint_dir=gs://my-bucket/jdistill/kd-qwen --workdir=runs/kd-qwen
#
# Steps: (1) copy this checkout to ~/jdistill on every worker (git archive of HEAD plus
# uncommitted changes, as a tarball over scp), (2) install it into ~/jdistill/.venv with
# the [tpu] extra (skip with --no-install), (3) start the same command on all workers at
# once, with --config.distributed.enabled=true so jax.distributed.initialize() discovers the
# slice; each worker logs to ~/jdistill/logs/worker-<hostname>.log, which is also streamed
# back by gcloud. Model and data paths must exist on every worker (or be gs:// paths
# readable from it). Set PROJECT to pass --project to gcloud.
set -euo pipefail

dry_run=0
install=1
while [[ $# -gt 0 && "$1" == --* ]]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --no-install) install=0 ;;
        --) break ;;
        *) echo "tpu_vm.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $# -lt 3 || "$3" != "--" ]]; then
    echo "usage: launch/tpu_vm.sh [--dry-run] [--no-install] TPU_NAME ZONE -- <jdistill.main arguments>" >&2
    exit 2
fi
tpu_name=$1
zone=$2
shift 3
main_args=$(printf '%q ' "$@")
project_flag=${PROJECT:+--project=$PROJECT}

run() {
    if [[ $dry_run == 1 ]]; then
        printf '%s\n' "$*"
    else
        "$@"
    fi
}

repo=$(cd "$(dirname "$0")/.." && pwd)
tarball=$(mktemp -t jdistill-XXXXXX.tar.gz)
trap 'rm -f "$tarball"' EXIT
if [[ $dry_run == 0 ]]; then
    (cd "$repo" && git ls-files -co --exclude-standard -z | tar --null -czf "$tarball" -T -)
fi

ssh_all=(gcloud compute tpus tpu-vm ssh "$tpu_name" --zone="$zone" --worker=all $project_flag)
run gcloud compute tpus tpu-vm scp "$tarball" "$tpu_name:~/jdistill.tar.gz" --zone="$zone" --worker=all $project_flag
run "${ssh_all[@]}" --command="mkdir -p ~/jdistill/logs && tar -xzf ~/jdistill.tar.gz -C ~/jdistill"
if [[ $install == 1 ]]; then
    run "${ssh_all[@]}" --command="cd ~/jdistill && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
fi
run "${ssh_all[@]}" --command="cd ~/jdistill && .venv/bin/python -m jdistill.main ${main_args}--config.distributed.enabled=true 2>&1 | tee logs/worker-\$(hostname).log"
