"""The launch scripts build the commands they promise (checked with their dry-run modes)."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **env):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PATH": os.environ["PATH"], **env})


def test_tpu_vm_runs_the_same_command_on_every_worker():
    out = _run(["bash", "launch/tpu_vm.sh", "--dry-run", "my-tpu", "europe-west4-b", "--",
                "--config=configs/kd.py", "--config.train.checkpoint_dir=gs://bucket/run"], PROJECT="proj")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in lines[0]
    assert "--project=proj" in lines[0]
    assert "pip install -q -e '.[tpu]'" in lines[2]
    assert ("python -m jdistill.main --config=configs/kd.py --config.train.checkpoint_dir=gs://bucket/run "
            "--config.distributed.enabled=true") in lines[3]
    assert "logs/worker-$(hostname).log" in lines[3] and "--worker=all" in lines[3]
    no_install = _run(["bash", "launch/tpu_vm.sh", "--dry-run", "--no-install", "t", "z", "--", "--config=c.py"])
    assert len(no_install.stdout.strip().splitlines()) == 3


def test_tpu_vm_usage_error():
    out = _run(["bash", "launch/tpu_vm.sh", "only-a-name"])
    assert out.returncode == 2 and "usage: launch/tpu_vm.sh" in out.stderr


def test_gpu_multinode_passes_the_coordinator_to_jax_distributed():
    out = _run(["bash", "launch/gpu_multinode.sh", "--config=configs/kd.py"],
               COORDINATOR="10.0.0.1:1234", NUM_PROCESSES="4", PROCESS_ID="2", DRY_RUN="1")
    assert out.returncode == 0, out.stderr
    for piece in ("--config.distributed.enabled=true", "--config.distributed.coordinator_address=10.0.0.1:1234",
                  "--config.distributed.num_processes=4", "--config.distributed.process_id=2",
                  "logs/process-2.log"):
        assert piece in out.stdout


def test_gpu_multinode_under_slurm_uses_srun():
    out = _run(["bash", "launch/gpu_multinode.sh", "--config=configs/kd.py"], SLURM_JOB_ID="7", DRY_RUN="1")
    assert out.stdout.startswith("srun --kill-on-bad-exit=1 bash -c")
    assert "process-${SLURM_PROCID}.log" in out.stdout and "coordinator_address" not in out.stdout


def test_gpu_multinode_needs_slurm_or_a_coordinator():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    out = subprocess.run(["bash", "launch/gpu_multinode.sh", "--config=c.py"], cwd=REPO, capture_output=True,
                         text=True, env=env)
    assert out.returncode == 2 and "set COORDINATOR, NUM_PROCESSES and PROCESS_ID" in out.stderr
