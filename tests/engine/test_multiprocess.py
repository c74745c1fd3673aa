"""A real two-process run of the demo (gloo collectives on CPU) reaches the single-process parameters."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from jdistill.demo import assets
from jdistill.engine import trainer
from tests.engine.demo_setup import demo_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, monkeypatch):
    monkeypatch.setenv("JDISTILL_CACHE", str(tmp_path / "cache"))
    for name in ("student_init", "train", "validation"):
        assets.resolve_name(name)  # build the demo assets once, before the workers start
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.engine.multiprocess_worker", str(i), str(tmp_path), port],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
        assert f"process {i}: 4 steps" in out

    # One process over the same 8-device (data=8) mesh and the same global batch.
    single = trainer.run(demo_config(steps=4), str(tmp_path / "single"))
    assert single.steps == 4
    multi_weights = load_file(str(tmp_path / "multi" / "student_hf" / "model.safetensors"))
    single_weights = load_file(str(tmp_path / "single" / "student_hf" / "model.safetensors"))
    assert multi_weights.keys() == single_weights.keys()
    for name in single_weights:
        np.testing.assert_allclose(multi_weights[name], single_weights[name], rtol=1e-5, atol=1e-6, err_msg=name)
