"""Checkpoint files, one module per concern:

* :mod:`.loading`: safe loading (``weights_only=True``, the allow-list, refusal messages that
  name every global a file wants), :func:`keep_weights` for a plain mmengine run's files;
* :mod:`.schemes`: :func:`install_safe_loading`, which makes mmengine's ``CheckpointLoader``
  schemes load safely (entry points call it; importing the package changes nothing in
  mmengine), and the timm models' ``pretrained`` weights;
* :mod:`.integrity`: the SHA-256 of each entry, stored in ``meta`` and verified on load;
* :mod:`.saving`: atomic writing (the ``mmvit_ext_atomic_local`` file backend);
* :mod:`.message_hub`: the runner's message_hub in a form that loads safely;
* :mod:`.matching`: strict key/shape matching and its one mismatch report;
* :mod:`.work_dir`: no silent restart or overwrite of a training work dir;
* :mod:`.errors`: the errors, each message naming the file.
"""
from .errors import (CheckpointError, CheckpointMismatchError, DamagedCheckpointError,
                     MissingCheckpointError, UnsafeCheckpointError, checkpoint_errors_exit)
from .integrity import add_checksum, entry_sha256, verify_checksum
from .loading import (MMENGINE_CHECKPOINT_GLOBALS, OFFICIAL_SAFE_GLOBALS, keep_weights,
                      load_checkpoint_file, pickle_globals, unsafe_globals)
from .matching import check_state_dict, describe_mismatches, state_dict_mismatches
from .message_hub import plain_message_hub, restore_message_hub
from .saving import AtomicLocalBackend, atomic_write_bytes, save_checkpoint_file, stale_temp_files
from .schemes import install_safe_loading, load_timm_pretrained
from .work_dir import check_work_dir

__all__ = [
    'AtomicLocalBackend', 'CheckpointError', 'CheckpointMismatchError', 'DamagedCheckpointError',
    'MMENGINE_CHECKPOINT_GLOBALS', 'MissingCheckpointError', 'OFFICIAL_SAFE_GLOBALS',
    'UnsafeCheckpointError', 'add_checksum', 'atomic_write_bytes', 'check_state_dict',
    'check_work_dir', 'checkpoint_errors_exit', 'describe_mismatches', 'entry_sha256',
    'install_safe_loading',
    'keep_weights', 'load_checkpoint_file', 'load_timm_pretrained', 'pickle_globals',
    'plain_message_hub', 'restore_message_hub', 'save_checkpoint_file', 'stale_temp_files',
    'state_dict_mismatches', 'unsafe_globals', 'verify_checksum'
]
