"""Issue 17, item 6: checkpoints are verified on restore, damaged ones are named and passed over, failed
saves are reported at once and abandoned cleanly, and a full disk is one clear error."""

import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdistill.data.batching import DataPosition
from jdistill.engine import checkpoint_integrity
from jdistill.engine.checkpointing import (
    CheckpointMismatchError,
    Checkpointer,
    NoIntactCheckpointError,
)
from tests.reliability import faults


def _state(seed: int, width: int = 64):
    key = jax.random.key(seed)
    params = {"embedding": jax.random.normal(key, (256, width)), "bias": jnp.full((width,), seed, jnp.bfloat16)}
    return {"params": params, "step": jnp.asarray(seed, jnp.int32)}


def _saved(directory, steps=(2, 4), keep=3) -> Checkpointer:
    checkpointer = Checkpointer(str(directory), keep=keep)
    for step in steps:
        checkpointer.save(step, _state(step), DataPosition(0, step), {"method": "kd"})
    checkpointer.wait()
    return checkpointer


def _equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_checksums_see_a_single_flipped_bit_and_ignore_sharding():
    x = jax.random.normal(jax.random.key(0), (64, 32))
    flipped = np.asarray(x).copy()
    flipped.view(np.uint32)[17, 5] ^= 1
    assert checkpoint_integrity.checksums({"x": x}) != checkpoint_integrity.checksums({"x": jnp.asarray(flipped)})
    swapped = np.asarray(x).copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert checkpoint_integrity.checksums({"x": x}) != checkpoint_integrity.checksums({"x": jnp.asarray(swapped)})
    mesh = jax.make_mesh((8,), ("d",))
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d")))
    assert checkpoint_integrity.checksums({"x": x}) == checkpoint_integrity.checksums({"x": sharded})


def test_an_intact_checkpoint_restores_exactly(tmp_path):
    _saved(tmp_path).close()
    step, state, position, metadata = Checkpointer(str(tmp_path)).restore_latest(_state(0))
    assert step == 4 and position == DataPosition(0, 4) and metadata["method"] == "kd"
    assert _equal(state, _state(4))


@pytest.mark.parametrize("damage, why", [
    (lambda step_dir: faults.flip_byte(faults.largest_array_file(step_dir)), "do not match their checksums"),
    (lambda step_dir: faults.truncate(faults.largest_array_file(step_dir)), "Encountered error while reading"),
    (lambda step_dir: open(os.path.join(step_dir, "state", "_METADATA"), "w").write("{garbage"), "Expecting"),
    (lambda step_dir: open(os.path.join(step_dir, "data", "metadata"), "w").write("{garb"), "Expecting"),
    (lambda step_dir: faults.truncate(os.path.join(step_dir, "state", "manifest.ocdbt"), 0.1), "DATA_LOSS"),
], ids=["flipped-bytes", "truncated-array", "damaged-array-metadata", "damaged-json", "truncated-manifest"])
def test_a_damaged_checkpoint_is_named_moved_aside_and_the_previous_one_used(tmp_path, capsys, damage, why):
    _saved(tmp_path / "ckpt").close()
    damage(str(tmp_path / "ckpt" / "4"))
    checkpointer = Checkpointer(str(tmp_path / "ckpt"))
    step, state, position, _ = checkpointer.restore_latest(_state(0))
    assert step == 2 and position == DataPosition(0, 2) and _equal(state, _state(2))
    out = capsys.readouterr().out
    assert f"WARNING: checkpoint {tmp_path / 'ckpt' / '4'} is damaged (" in out and why in out
    assert f"moved to {tmp_path / 'ckpt_damaged' / '4'}; resuming from the newest intact checkpoint, step 2." in out
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["2"] and checkpointer.latest_step() == 2
    checkpointer.save(4, _state(4), DataPosition(0, 4), {})  # the step can be written again (no StepAlreadyExists)
    checkpointer.wait()


def test_no_intact_checkpoint_is_an_error_listing_each(tmp_path):
    _saved(tmp_path).close()
    for step in ("2", "4"):
        faults.flip_byte(faults.largest_array_file(str(tmp_path / step)))
    with pytest.raises(NoIntactCheckpointError, match=r"No intact checkpoint in .* \(step 4: its arrays do not "
                       r"match their checksums: .*; step 2: .*\)\. Move that directory away"):
        Checkpointer(str(tmp_path)).restore_latest(_state(0))


def test_a_checkpoint_of_other_shapes_is_a_clear_error_not_strict_false(tmp_path):
    _saved(tmp_path).close()
    with pytest.raises(CheckpointMismatchError) as error:
        Checkpointer(str(tmp_path)).restore_latest(_state(0, width=48))
    message = str(error.value)
    assert message.startswith(f"The checkpoint {tmp_path / '4'} was written by a run with other shapes (")
    assert "['params']['embedding'] is float32(256, 64) there, float32(256, 48) now" in message
    assert "use a new --workdir" in message and "strict" not in message
    assert sorted(os.listdir(tmp_path)) == ["2", "4"]  # not mistaken for damage


def test_an_error_exit_completes_the_save_in_flight(tmp_path):
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(6, _state(6), DataPosition(0, 6), {})
    checkpointer.finish_or_abandon()  # what the trainer does when the run fails
    assert Checkpointer(str(tmp_path)).restore_latest(_state(0))[0] == 6


_DISK_SCRIPT = textwrap.dedent("""
    import os, sys
    import jax, jax.numpy as jnp
    from jdistill.data.batching import DataPosition
    from jdistill.engine.checkpointing import Checkpointer, CheckpointWriteError
    directory = sys.argv[1] if len(sys.argv) > 1 else os.environ["JD_DIR"]
    state = {{"w": jax.random.normal(jax.random.key(0), ({n},))}}
    checkpointer = Checkpointer(directory)
    {body}
""")


@pytest.fixture(scope="module")
def tmpfs_ok():
    if not faults.can_mount_tmpfs():
        pytest.skip("no private tmpfs mount here (unshare -rm); the full-disk tests need one")


def test_a_full_disk_is_refused_before_the_save_starts(tmpfs_ok, tmp_path):
    body = textwrap.dedent("""
    try:
        checkpointer.save(4, state, DataPosition(0, 4), {})
    except CheckpointWriteError as error:
        print("ERROR", error)
    print("LEFT", sorted(os.listdir(directory)))
    """)
    script = _DISK_SCRIPT.format(n=200_000, body=body)  # 800 kB of state on a 256 kB disk
    out = faults.run_on_small_tmpfs(str(tmp_path / "mnt"), "256k", script, {"JD_DIR": str(tmp_path / "mnt" / "ck")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (f"ERROR No space for checkpoint step 4 in {tmp_path / 'mnt' / 'ck'}: it needs about 0.8 MiB, "
            "0.2 MiB are free. Free some space, lower train.keep_checkpoints") in out.stdout
    assert "LEFT []" in out.stdout


def test_a_save_that_fills_the_disk_is_reported_at_once_and_abandoned(tmpfs_ok, tmp_path):
    """The disk fills during the asynchronous write: the next poll (the next step) reports it, the partial
    checkpoint is removed and the previous one stays the latest."""
    body = textwrap.dedent("""
    checkpointer.save(2, state, DataPosition(0, 2), {})
    checkpointer.wait()
    with open(os.path.join(directory, "..", "filler"), "wb") as f:  # leaves less than a checkpoint free
        f.write(b"x" * (os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize - 300_000))
    checkpointer._check_space = lambda step, state: None  # as if the disk filled after the check
    checkpointer.save(4, state, DataPosition(0, 4), {})
    import time
    for polls in range(600):
        try:
            checkpointer.poll()
        except CheckpointWriteError as error:
            print("ERROR", error)
            break
        time.sleep(0.05)
    print("LEFT", sorted(os.listdir(directory)), checkpointer.latest_step())
    """)
    script = _DISK_SCRIPT.format(n=150_000, body=body)  # 600 kB per checkpoint on a 1 MB disk
    out = faults.run_on_small_tmpfs(str(tmp_path / "mnt"), "1m", script, {"JD_DIR": str(tmp_path / "mnt" / "ck")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (f"ERROR No space left on device while writing checkpoint step 4 to {tmp_path / 'mnt' / 'ck'}; it "
            "was abandoned and the latest checkpoint is still step 2.") in out.stdout
    assert "LEFT ['2'] 2" in out.stdout


def test_a_checkpoint_without_checksums_restores_unverified_and_is_never_moved(tmp_path, capsys):
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(str(tmp_path), options=ocp.CheckpointManagerOptions(create=True))
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(3)),
                                            data=ocp.args.JsonSave({"position": {"epoch": 0, "step_in_epoch": 3}})))
    manager.wait_until_finished()
    manager.close()
    step, state, _, _ = Checkpointer(str(tmp_path)).restore_latest(_state(0))
    assert step == 3 and _equal(state, _state(3))
    assert f"checkpoint {tmp_path / '3'} has no checksums (written by an older jdistill); restored unverified." \
        in capsys.readouterr().out
    with pytest.raises(CheckpointMismatchError, match=r"has no checksums \(an older jdistill wrote it\) and cannot "
                       r"be restored into this run"):
        Checkpointer(str(tmp_path)).restore_latest(_state(0, width=48))
    assert os.listdir(tmp_path) == ["3"]
