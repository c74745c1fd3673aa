"""A training run that kills itself with SIGKILL (kill -9) right after logging a given step; not a test module.

``python -m tests.reliability.kill_worker CONFIG_JSON WORKDIR KILL_AFTER_STEP``
"""

import json
import os
import signal
import sys

# Backend optimisation off: the tests' tiny programs compile faster (see tests/conftest.py).
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
os.environ["JAX_PLATFORMS"] = "cpu"

import ml_collections  # noqa: E402

from jdistill.engine import checkpointing, metrics_writer, trainer  # noqa: E402


def main(config_json: str, workdir: str, kill_after: int) -> None:
    config = ml_collections.ConfigDict(json.loads(open(config_json).read()))
    write = metrics_writer.MetricsWriter.write

    def write_then_die(self, step, metrics, *, split):
        write(self, step, metrics, split=split)
        if split == "train" and step >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    save = checkpointing.Checkpointer.save

    def save_and_wait(self, *args, **kwargs):  # so that "after the checkpoint" is well defined
        save(self, *args, **kwargs)
        self.wait()

    metrics_writer.MetricsWriter.write = write_then_die
    checkpointing.Checkpointer.save = save_and_wait
    trainer.run(config, workdir)
    raise SystemExit("the run was meant to be killed before it ended")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
