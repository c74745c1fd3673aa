"""Errors at the command line: one line that names the fix, the traceback on request.

Every error jdistill raises for a problem the user can fix (a config field out
of range, a missing file, a damaged checkpoint, a locked workdir, a full disk,
a diverged run) carries a message that says what to change. The entry points
run under :func:`reported_errors`, which prints that message as
``jdistill: error: ...`` on stderr and exits with status 1 (130 on Ctrl-C);
the full traceback goes to ``<workdir>/error.log`` when the workdir exists,
and to the terminal with ``--verbose``. An error from outside jdistill's own
checks is printed with its type, as an unexpected error.

Libraries' own error logs (orbax logs a failed asynchronous save at length)
are hidden unless ``--verbose``: :func:`quiet_library_logs`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import traceback

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIMIT = 600  # characters of an unexpected error's message


def _raised_by_jdistill(error: BaseException) -> bool:
    if type(error).__module__.startswith("jdistill"):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(_PACKAGE_DIR + os.sep)


def _is_disk_full(error: BaseException) -> bool:
    from jdistill.engine.checkpointing import is_disk_full

    return is_disk_full(error)


def one_line(error: BaseException) -> str:
    """The message printed for ``error``."""
    text = " ".join(str(error).split())
    if _is_disk_full(error) and not _raised_by_jdistill(error):
        where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
        return f"No space left on device{where}. Free some space (or point --workdir / train.checkpoint_dir at a " \
               "larger disk) and rerun the same command to resume from the last checkpoint."
    if _raised_by_jdistill(error) and text:
        return text
    if len(text) > _LIMIT:
        text = text[: _LIMIT - 3] + "..."
    return f"unexpected {type(error).__name__}: {text}"


def _write_log(workdir: str | None, error: BaseException) -> str | None:
    if not workdir or not os.path.isdir(workdir):
        return None
    path = os.path.join(workdir, "error.log")
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(sys.argv)}\n")
            f.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    except OSError:
        return None
    return path


@contextlib.contextmanager
def reported_errors(*, verbose: bool, workdir: str | None = None):
    """Runs the body; an error becomes one line on stderr and exit status 1 (see the module docstring)."""
    try:
        yield
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("jdistill: interrupted; rerun the same command to resume from the last checkpoint.\n")
        sys.exit(130)
    except BaseException as error:  # noqa: BLE001 - the point of this function
        if verbose:
            raise
        log = _write_log(workdir, error)
        sys.stderr.write(f"jdistill: error: {one_line(error)}\n")
        where = f"in {log}, or " if log else ""
        sys.stderr.write(f"jdistill: (the traceback is {where}printed with --verbose)\n")
        sys.stderr.flush()
        sys.exit(1)


class _DropLibraryRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_library_logs() -> None:
    """Hides orbax's log records (its failed-save reports run to hundreds of lines); jdistill reports the error."""
    logger = logging.getLogger("absl")
    logger.addFilter(_DropLibraryRecords())
    for handler in logger.handlers + logging.getLogger().handlers:
        handler.addFilter(_DropLibraryRecords())
