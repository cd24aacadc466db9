"""TensorFlow's native log lines: quiet by default, on with ``RECSTRATA_TF_LOGS=1``.

TensorFlow logs through abseil. Two kinds of lines reach stderr when a model
is loaded:

- lines logged while ``libtensorflow_framework.so.2`` runs its static
  initialisers (the "oneDNN custom operations are on" line and abseil's
  "All log messages before absl::InitializeLog()" preamble). They are written
  before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so no setting silences
  them;
- everything later (SavedModel reader/loader lines), which obeys
  ``TF_CPP_MIN_LOG_LEVEL`` (0 all, 1 no INFO, 2 no WARNING, 3 no ERROR).

Unless ``RECSTRATA_TF_LOGS=1``, :func:`defaults` sets ``TF_CPP_MIN_LOG_LEVEL=1``
when the user has not set it, and :func:`quiet_load` runs the loading of the
native libraries (or the ``tensorflow`` import) with file descriptor 2
redirected to a temporary file, then writes back every line whose severity
passes that level (the preamble line is dropped). A line that does not start
an abseil record belongs to the record before it (multi-line messages); lines
before the first record are always written back. The capture is replayed in a
``finally``, so an exception loses nothing.

Not thread-safe by itself: callers hold their own load lock (the capture
redirects the process-wide fd 2 for the duration of the load).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

ENV_SWITCH = "RECSTRATA_TF_LOGS"    # "1": leave TensorFlow's logging alone
ENV_LEVEL = "TF_CPP_MIN_LOG_LEVEL"  # TensorFlow's own knob
DEFAULT_LEVEL = "1"                 # drop INFO, keep warnings and errors

# An abseil log record's first line: severity letter, MMDD, time, thread, file:line].
_RECORD = re.compile(rb"^([IWEF])\d{4} \d+:\d+:\d+\.\d+\s+\d+ [^\]\s]+:\d+\] ")
_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def enabled() -> bool:
    """True when the user asked for TensorFlow's log lines (RECSTRATA_TF_LOGS=1)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("1", "true", "yes", "on")


def defaults() -> None:
    """Sets TF_CPP_MIN_LOG_LEVEL=1 unless the user set it or RECSTRATA_TF_LOGS=1.

    Must run before TensorFlow's libraries are loaded (they read it then)."""
    if not enabled():
        os.environ.setdefault(ENV_LEVEL, DEFAULT_LEVEL)


def _min_level() -> int:
    try:
        return int(os.environ.get(ENV_LEVEL, "0"))
    except ValueError:
        return 0


def filter_lines(data: bytes, min_level: int) -> bytes:
    """``data`` without the abseil records below ``min_level`` and without the preamble.

    A record's continuation lines (those not starting a new record) share its fate."""
    out = []
    keep = True
    for line in data.splitlines(keepends=True):
        if line.rstrip(b"\r\n") == _PREAMBLE:
            continue
        m = _RECORD.match(line)
        if m:
            keep = _SEVERITY[m.group(1)] >= min_level
        if keep:
            out.append(line)
    return b"".join(out)


@contextlib.contextmanager
def quiet_load():
    """Runs the body with fd 2 captured; replays the lines the log level lets through.

    A no-op with RECSTRATA_TF_LOGS=1, or when fd 2 cannot be duplicated."""
    defaults()
    if enabled():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    capture = tempfile.TemporaryFile()
    try:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            capture.seek(0)
            kept = filter_lines(capture.read(), _min_level())
            while kept:
                kept = kept[os.write(2, kept):]
    finally:
        os.close(saved)
        capture.close()


def import_tensorflow():
    """``import tensorflow`` under :func:`quiet_load` (a plain import once it is loaded)."""
    if "tensorflow" not in sys.modules:
        with quiet_load():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]
