"""The package's layers import only downward (the import-linter contracts in ``.importlinter``)."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_linter_contracts_are_kept():
    command = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert command, "lint-imports (the import-linter package, a test dependency) is not installed"
    out = subprocess.run([command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout, out.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a loss kernel importing the engine breaks it."""
    import importlib.util

    spec = importlib.util.find_spec("importlinter")
    assert spec is not None
    config = tmp_path / ".importlinter"
    with open(os.path.join(REPO, ".importlinter"), encoding="utf-8") as f:
        config.write_text(f.read())
    package = tmp_path / "jdistill"
    shutil.copytree(os.path.join(REPO, "jdistill"), package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(package / "losses" / "reductions.py", "a", encoding="utf-8") as f:
        f.write("\nfrom jdistill.engine import trainer  # noqa: E402,F401  (an upward import)\n")
    command = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([command, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode != 0 and "jdistill.losses.reductions -> jdistill.engine.trainer" in out.stdout, out.stdout
