"""The figures of each family's mechanism, from an :class:`AttentionRecorder`.

:func:`draw_attention` writes, for one stage/block and one query:

* RMT: ``prior`` (the per-head decay ``gamma ** (|dy| + |dx|)`` around the query),
  ``attention`` (decomposed: W pass, H pass and the effective map of both; full MaSA: its
  map) and ``receptive_field`` (the MaSA map against plain softmax attention of the same q, k,
  with the mean Manhattan distance of each map's weight);
* Pale: ``attention``: the query's row and column groups (the tokens it attends to) and the
  per-head weights of each branch;
* GroupMixFormer: ``attention``: the query's weights over the individual tokens (heads 0-1)
  and over the 3x3, 5x5 and 7x7 group proxies (heads 2-7);
* LaViT (every block of the stage): ``attention``: the query's attention over the pooled keys
  per layer and head, with the layer's diagonality score (the term of the diagonality loss),
  and ``saturation``: that score and the cosine similarity of each layer's attention with the
  previous layer's.

Each family names its ``<family>_figures`` function in its registration
(``AttentionRecording.figures``).
"""
import os.path as osp

import numpy as np
import torch

from mmvit_ext.models.families import resolve
from mmvit_ext.models.losses.diagonality_loss import diagonality_loss
from mmvit_ext.oracles import pale as pale_oracle
from . import attention_weights as aw
from .figures import Panel, draw_curves, draw_grid

GMA_SEGMENTS = ('tokens', '3x3 proxies', '5x5 proxies', '7x7 proxies')


def stage_stride(stage):
    """Input pixels per token side in stage ``stage`` (all four families: 4, 8, 16, 32)."""
    return 2 ** (stage + 2)


def query_token(query_px, hw, stride):
    """Token (y, x) of the input pixel ``query_px = (x, y)`` on an (H, W) grid."""
    x, y = query_px
    return min(int(y) // stride, hw[0] - 1), min(int(x) // stride, hw[1] - 1)


def _heads(heads, num_heads):
    if heads is None:
        return list(range(num_heads))
    bad = [h for h in heads if not 0 <= h < num_heads]
    if bad:
        raise ValueError(f'--heads {bad} out of range: this block has {num_heads} heads '
                         f'(0..{num_heads - 1}).')
    return list(heads)


def _np(t):
    return t.detach().float().cpu().numpy()


def _mean_distance(weight_map, token):
    """Mean Manhattan distance (in tokens) from ``token`` of a map's weight."""
    H, W = weight_map.shape
    dist = np.abs(np.arange(H)[:, None] - token[0]) + np.abs(np.arange(W)[None] - token[1])
    return float((np.abs(weight_map) * dist).sum() / max(np.abs(weight_map).sum(), 1e-12))


def rmt_figures(record, token, heads, path, title, image, marker, extent):
    H, W = record.hw
    y, x = token
    weights = record.weights(query=token)
    gammas = torch.exp(record.rel_pos.decay).tolist()
    prior = _np(weights['prior'])
    paths = dict(prior=path('prior'))
    draw_grid(paths['prior'], image, [[Panel(f'prior head {n} (gamma {gammas[n]:.3f})', prior[n],
                                             extent, vmin=0., vmax=1.) for n in heads]],
              f'{title}: spatial decay prior', marker)
    if record.kind == 'rmt_decomposed':
        rows, masa = [], {}
        for n in heads:
            w_map, h_map = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
            w_map[y] = _np(weights['w_pass'][0, y, n, x])
            h_map[:, x] = _np(weights['h_pass'][0, x, n, y])
            masa[n] = _np(weights['effective'][0, n])
            rows.append([Panel(f'head {n}: W pass', w_map, extent),
                         Panel(f'head {n}: H pass', h_map, extent),
                         Panel(f'head {n}: effective (H after W)', masa[n], extent)])
        name = 'decomposed MaSA'
    else:
        masa = {n: _np(weights['attention'][0, n, 0]).reshape(H, W) for n in heads}
        rows = [[Panel(f'head {n}: MaSA', masa[n], extent) for n in heads]]
        name = 'full MaSA'
    paths['attention'] = path('attention')
    draw_grid(paths['attention'], image, rows, f'{title}: {name}', marker)
    plain = {n: _np(weights['plain'][0, n, 0]).reshape(H, W) for n in heads}
    rows = [[Panel(f'head {n}: MaSA, mean dist {_mean_distance(masa[n], token):.2f}', masa[n],
                   extent) for n in heads],
            [Panel(f'head {n}: plain attention, mean dist {_mean_distance(plain[n], token):.2f}',
                   plain[n], extent) for n in heads]]
    paths['receptive_field'] = path('receptive_field')
    draw_grid(paths['receptive_field'], image, rows,
              f'{title}: receptive field, {name} vs plain softmax attention', marker)
    return paths


def pale_figures(record, token, heads, path, title, image, marker, extent):
    H, W = record.hw
    half = record.num_heads // 2
    weights = record.weights(query=token)
    s_r, s_c = record.module.pale_size
    groups = (pale_oracle.interlaced_group_mask(H, s_r)[token[0]][:, None].expand(H, W),
              pale_oracle.interlaced_group_mask(W, s_c)[token[1]][None].expand(H, W))
    rows = []
    for branch, name in enumerate(('row', 'column')):
        row = [Panel(f'{name} group of the query', _np(groups[branch].float()), extent, vmin=0.,
                     vmax=1.)]
        for n in heads:
            if (n >= half) == bool(branch):
                row.append(Panel(f'head {n} ({name} branch)',
                                 _np(weights[name][0, n - branch * half, 0]).reshape(H, W),
                                 extent))
        rows.append(row)
    paths = dict(attention=path('attention'))
    draw_grid(paths['attention'], image, rows,
              f'{title}: pale-shaped attention (pale size {s_r}x{s_c})', marker)
    return paths


def group_mix_figures(record, token, heads, path, title, image, marker, extent):
    H, W = record.hw
    attention = record.weights(query=token)['attention']
    # one column per segment (tokens, then the 3x3, 5x5, 7x7 proxies), one row per head of it
    rows = [[Panel(f'head {n}: over {GMA_SEGMENTS[n // 2]}', _np(attention[0, n, 0]).reshape(H, W),
                   extent, diverging=True) for n in heads if n % 2 == j] for j in (0, 1)]
    rows = [row for row in rows if row]
    paths = dict(attention=path('attention'))
    draw_grid(paths['attention'], image, rows,
              f'{title}: group-mix attention (scale * q softmax(k)^T; signed)', marker)
    return paths


def lavit_figures(records, token, heads, path, title, image, marker):
    pool = records[0].module.kv_tokens.pool_size
    hw = records[0].hw
    index = token[0] * hw[1] + token[1]
    rows, scores, sims, previous = [], [], [], None
    for record in records:
        attention = record.weights()['attention']        # (B, h, L, K)
        scores.append(float(diagonality_loss(attention, hw, pool)))
        if previous is not None:
            sims.append(float(aw.attention_similarity(previous, attention).mean()))
        previous = attention
        kind = 'VA' if record.kind == 'lavit_va' else 'LA'
        rows.append([Panel(f'block {record.block} ({kind}) head {n}, diag {scores[-1]:.3f}',
                           _np(attention[0, n, index]).reshape(pool, pool)) for n in heads])
    paths = dict(attention=path('attention'), saturation=path('saturation'))
    draw_grid(paths['attention'], image, rows,
              f'{title}: attention over the {pool}x{pool} pooled keys', marker)
    blocks = [r.block for r in records]
    curves = {'diagonality score (loss term, lower = more diagonal)': (blocks, scores)}
    if sims:
        curves['cosine similarity to the previous layer'] = (blocks[1:], sims)
    draw_curves(paths['saturation'], curves, f'{title}: attention saturation', 'block')
    return paths


def draw_attention(recorder, stage, block, image, query_px, out_dir, heads=None, prefix=''):
    """Write the figures of one stage/block (LaViT: the whole stage) for one query.

    Args:
        recorder (AttentionRecorder): Records of a forward of the network input ``image``.
        stage, block (int): Indices (negative counts from the end).
        image (ndarray): (H, W, 3) uint8 RGB network input (after the test pipeline).
        query_px (tuple): (x, y) pixel of ``image``.
        out_dir (str): Output folder. heads (list[int], optional): Heads to draw; all by
            default. prefix (str): File name prefix.

    Returns:
        dict: figure name -> PNG path (each with its .npz).
    """
    record = recorder.get(stage, block)
    recording, family = record.family.attention, record.family.name
    if recording.figures is None:
        raise ValueError(f'The {family} family declares no attention figures.')
    stride = stage_stride(record.stage)
    token = query_token(query_px, record.hw, stride)
    where = f's{record.stage}' if recording.per_stage else f's{record.stage}_b{record.block}'

    def path(name):
        return osp.join(out_dir, f'{prefix}{family}_{where}_{name}.png')

    title = (f'{family} stage {record.stage}' + ('' if recording.per_stage else
                                                 f' block {record.block}') +
             f', query ({query_px[0]}, {query_px[1]}) = token {token}')
    chosen = _heads(heads, record.num_heads)
    draw = resolve(recording.figures)
    if recording.per_stage:
        return draw(recorder.stage(stage), token, chosen, path, title, image, query_px)
    extent = (record.hw[1] * stride, record.hw[0] * stride)
    return draw(record, token, chosen, path, title, image, query_px, extent)
