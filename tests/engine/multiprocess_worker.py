"""One process of a two-process CPU run (see test_multiprocess.py); not a test module itself."""

import json
import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from jdistill.engine import trainer  # noqa: E402
from tests.engine import tiny_setup  # noqa: E402


def main(process_id: int, root: str, port: str) -> None:
    setup = json.loads((pathlib.Path(root) / "setup.json").read_text())
    config = tiny_setup.tiny_config(setup, "kd", **{
        "distributed.enabled": True,
        "distributed.coordinator_address": f"127.0.0.1:{port}",
        "distributed.num_processes": 2,
        "distributed.process_id": process_id,
        "train.steps": 4,
    })
    result = trainer.run(config, str(pathlib.Path(root) / "multi"))
    print(f"process {process_id}: {result.steps} steps, rougeL {result.final_eval['rougeL']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
