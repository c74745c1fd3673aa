"""One process of a two-process CPU run (see test_multiprocess.py); not a test module itself."""

import os
import pathlib
import sys

# Backend optimisation off: the tests' tiny programs compile faster (see tests/conftest.py).
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from jdistill.engine import trainer  # noqa: E402
from tests.engine.demo_setup import demo_config  # noqa: E402


def main(process_id: int, root: str, port: str) -> None:
    config = demo_config(steps=4)
    config.distributed.enabled = True
    config.distributed.coordinator_address = f"127.0.0.1:{port}"
    config.distributed.num_processes = 2
    config.distributed.process_id = process_id
    result = trainer.run(config, str(pathlib.Path(root) / "multi"))
    print(f"process {process_id}: {result.steps} steps, rougeL {result.final_eval['rougeL']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
