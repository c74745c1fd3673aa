"""The training engine: config defaults, the one jitted train step, the loop, checkpoints, evaluation, report.

Entry points: :func:`jdistill.engine.trainer.run` (what ``python -m jdistill.main``
calls) and :func:`jdistill.engine.defaults.base_config` (the config schema).
Submodules are imported explicitly; importing this package is cheap.
"""
