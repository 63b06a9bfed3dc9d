"""The errors of checkpoint handling; each message names the file and says what to do."""
import contextlib


class CheckpointError(RuntimeError):
    """A checkpoint that cannot or must not be used; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file wants to run or build objects that safe loading does not allow."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """The checkpoint file (or model name) does not exist."""


class DamagedCheckpointError(CheckpointError):
    """The file is truncated, empty or corrupted."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's weights do not fit the model."""


@contextlib.contextmanager
def checkpoint_errors_exit():
    """Turn a :class:`CheckpointError` of the block into a one-message exit (no traceback)."""
    try:
        yield
    except CheckpointError as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None
