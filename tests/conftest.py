"""Test-suite set-up shared by every test module.

The suite runs on 8 virtual CPU devices so that sharded code paths are
exercised on any machine. The flag must be set before jax is imported.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (must follow the environment set-up above)

jax.config.update("jax_enable_x64", False)
