"""Test-suite set-up shared by every test module.

The suite runs on 8 virtual CPU devices so that sharded code paths are
exercised on any machine, with XLA's backend (LLVM) optimisation off to cut
compile time. The flags must be set before jax is imported.
"""

import os

# The suite's programs are tiny and compiled once each, so most of its time went
# to LLVM optimising machine code that then ran for milliseconds. Level 0 skips
# that backend optimisation only: the HLO passes (fusion, layout, sharding) are
# the same, so the tests check the same programs. The end-to-end test files run
# about a third faster, the whole suite 24 -> 21 minutes on a 2-core machine.
# Both flags reach the command-line runs the tests start as subprocesses.
_FLAGS = ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0")
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# `--doctest-modules` imports every module under tests/ at collection time; the
# two-process worker sets its own device count when it starts, so it must not be
# imported into the test process (it runs as a subprocess of test_multiprocess.py).
collect_ignore = ["engine/multiprocess_worker.py"]

import jax  # noqa: E402  (must follow the environment set-up above)
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """``hf_checkpoint(case) -> (directory, transformers model)``: a tiny random transformers
    model of ``tests/models/hf_cases.py`` saved with ``save_pretrained``, built once per session."""
    import torch
    import transformers

    from tests.models.hf_cases import HF_CASE_SETUP, HF_CASES

    cache = {}

    def build(case: str):
        if case not in cache:
            torch.manual_seed(0)
            config = HF_CASES[case]()
            config._attn_implementation = "eager"
            model = transformers.AutoModelForCausalLM.from_config(config).eval()
            if case in HF_CASE_SETUP:
                HF_CASE_SETUP[case](model)
            directory = tmp_path_factory.mktemp(case)
            model.save_pretrained(directory, safe_serialization=True)
            cache[case] = (directory, model)
        return cache[case]

    return build
