"""Work-dir checks of ``tools/train.py``: no silent restart, no silent overwrite."""
import contextlib
import os
import os.path as osp

from .saving import TEMP_MARK, stale_temp_files


def _saved_checkpoints(work_dir):
    """The complete checkpoint files of ``work_dir`` (saves are atomic), newest first, and
    the newest one to resume from (best checkpoints hold no optimizer state)."""
    paths = sorted((osp.join(work_dir, f) for f in os.listdir(work_dir)
                    if f.endswith('.pth') and TEMP_MARK not in f), key=osp.getmtime,
                   reverse=True)
    return paths, next((p for p in paths if not osp.basename(p).startswith('best_')), None)


def _resume_point(work_dir):
    """``(checkpoint or None, why not)``: what ``--resume`` without a path continues from."""
    last_file = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last_file):
        return None, 'no last_checkpoint file, which names the checkpoint to resume from'
    with open(last_file) as f:
        last = f.read().strip()  # as mmengine's find_latest_checkpoint reads it
    if not osp.isfile(last):
        return None, f'its last_checkpoint names {last}, which does not exist'
    return last, None


def check_work_dir(work_dir, resume, load_from, overwrite):
    """Stop before a run silently restarts or overwrites: ``--resume`` with nothing to resume,
    or a new run into a work dir that holds checkpoints (unless ``overwrite``, which removes
    ``last_checkpoint`` first, so that an interrupted new run is not resumed as the old one)."""
    exists = osp.isdir(work_dir)
    saved, resumable = _saved_checkpoints(work_dir) if exists else ([], None)
    last, why_not = _resume_point(work_dir) if exists else (None, 'no last_checkpoint file')
    if resume and load_from is None and last is None:
        if resumable:
            shown = ', '.join(osp.basename(p) for p in saved[:3])
            raise SystemExit(
                f'--resume: {work_dir} has {why_not} (a save or an --overwrite run was '
                f'interrupted before writing it). It holds {shown}{" ..." * (len(saved) > 3)}: '
                f'to continue from the newest, give it: --resume {resumable}; to start anew, '
                f'run without --resume and with --overwrite.')
        stale = stale_temp_files(work_dir)
        partial = (f' It holds only incomplete files of an interrupted save: '
                   f'{", ".join(stale)}.' if stale else '')
        raise SystemExit(f'--resume: there is no checkpoint to resume from in {work_dir} '
                         f'({why_not}).{partial} Give the checkpoint as --resume CKPT, the '
                         f'right --work-dir, or start a new run without --resume.')
    if resume or not exists:
        return
    last_file = osp.join(work_dir, 'last_checkpoint')
    if overwrite:
        with contextlib.suppress(FileNotFoundError):  # another process of the run was first
            os.remove(last_file)
        return
    if saved or osp.exists(last_file):
        shown = ', '.join(osp.basename(p) for p in saved[:5]) or 'last_checkpoint'
        resume_as = '--resume' if last else (f'--resume {resumable}' if resumable else None)
        continue_it = f'Continue it with {resume_as}, choose' if resume_as else 'Choose'
        raise SystemExit(f'{work_dir} already holds checkpoints of an earlier run ({shown}'
                         f'{" ..." * (len(saved) > 5)}); a new run would overwrite them. '
                         f'{continue_it} another --work-dir, or pass --overwrite to replace '
                         f'them.')
