"""SHA-256 of each checkpoint entry, stored in ``meta`` at saving and verified at loading."""
import hashlib

import torch

from .errors import DamagedCheckpointError

CHECKSUM_KEY = 'sha256'  # in meta: entry name -> SHA-256
# in meta: SHA-256 of the entry names of CHECKSUM_KEY. Pickle writes each name once and refers
# to it from the map and the checkpoint alike: one damaged byte renames both consistently.
NAMES_CHECKSUM_KEY = 'sha256_names'


def entry_sha256(value):
    """SHA-256 of one checkpoint entry: its keys, its tensors' dtypes, shapes and bytes, and the
    ``repr`` of its other values, in (pickle-preserved) insertion order."""
    digest = hashlib.sha256()

    def visit(obj):
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach().cpu().contiguous()
            digest.update(f'T{tensor.dtype}{tuple(tensor.shape)}'.encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            digest.update(b'{')
            for key, item in obj.items():
                digest.update(repr(key).encode())
                visit(item)
            digest.update(b'}')
        elif isinstance(obj, (list, tuple)):
            digest.update(b'[')
            for item in obj:
                visit(item)
            digest.update(b']')
        else:
            digest.update(repr(obj).encode())

    visit(value)
    return digest.hexdigest()


def add_checksum(checkpoint):
    """Store in ``meta['sha256']`` the SHA-256 of every other entry (weights, optimizer ...)
    of ``checkpoint``; per entry, so that a checkpoint stripped of some entries (mmengine's
    ``published_keys``) still verifies."""
    meta = checkpoint.setdefault('meta', {})
    meta[CHECKSUM_KEY] = {
        name: entry_sha256(value) for name, value in checkpoint.items() if name != 'meta'}
    meta[NAMES_CHECKSUM_KEY] = entry_sha256(list(meta[CHECKSUM_KEY]))


def verify_checksum(checkpoint, path):
    """Entries whose SHA-256 differs from ``meta['sha256']``, entries it does not cover (a
    damaged entry name) and a missing ``state_dict`` make the file damaged; other entries it
    covers may be missing (mmengine's ``published_keys`` strip some)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    expected = meta.get(CHECKSUM_KEY) if isinstance(meta, dict) else None
    if not isinstance(expected, dict):
        return
    names = meta.get(NAMES_CHECKSUM_KEY)
    if names is not None and names != entry_sha256(list(expected)):
        raise DamagedCheckpointError(
            f'{path} is damaged: the names of its entries differ from those stored when it was '
            f'saved. Copy or download it again.')
    damaged = [name for name, sha in expected.items()
               if name in checkpoint and entry_sha256(checkpoint[name]) != sha]
    if damaged:
        raise DamagedCheckpointError(
            f'{path} is damaged: the SHA-256 of its {", ".join(damaged)} differs from the one '
            f'stored when it was saved. Copy or download it again.')
    unknown = [repr(name) for name in checkpoint if name != 'meta' and name not in expected]
    unknown += ["'state_dict' (missing)"] * ('state_dict' in expected
                                             and 'state_dict' not in checkpoint)
    if unknown:
        raise DamagedCheckpointError(
            f'{path} is damaged: its entries {", ".join(unknown)} differ from those whose '
            f'SHA-256 was stored when it was saved. Copy or download it again.')
