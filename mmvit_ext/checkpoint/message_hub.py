"""The runner's message_hub in a form that safe loading rebuilds (plain lists and numbers
instead of ``HistoryBuffer`` and numpy objects), and back."""
import numpy as np
from mmengine.logging import HistoryBuffer

# Saved message_hub entries: HistoryBuffer objects become this plain form.
PLAIN_HISTORY_MARK = '__mmvit_ext_history_buffer__'


def _plain(value):
    """numpy scalars -> Python numbers (safe loading rebuilds no numpy objects)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def plain_message_hub(state):
    """``MessageHub.state_dict()`` in a form that loads with ``weights_only=True``."""
    state = dict(state)
    state['log_scalars'] = {
        key: {PLAIN_HISTORY_MARK: True, 'log_history': buf._log_history.tolist(),
              'count_history': buf._count_history.tolist(), 'max_length': buf.max_length}
        for key, buf in state['log_scalars'].items()}
    state['runtime_info'] = _plain(state['runtime_info'])
    return state


def restore_message_hub(state):
    """Undo :func:`plain_message_hub` (a checkpoint saved by plain mmengine passes through)."""
    scalars = state.get('log_scalars', {})
    for key, value in scalars.items():
        if isinstance(value, dict) and value.get(PLAIN_HISTORY_MARK):
            scalars[key] = HistoryBuffer(value['log_history'], value['count_history'],
                                         value['max_length'])
    return state
