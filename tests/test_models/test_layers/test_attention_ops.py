"""softmax_attention: both kernels against a float64 reference, and which one runs when."""
import pytest
import torch
import torch.nn.functional as F

from mmvit_ext.models.layers import attention_ops as sa


def reference(q, k, v, mask, scale):
    """softmax(q k^T * scale + mask) v in float64, written out."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float('-inf')) if mask.dtype == torch.bool \
            else scores + mask.double()
    return scores.softmax(-1) @ v


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Counts the calls of F.scaled_dot_product_attention made through softmax_attention."""
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(sa.F, 'scaled_dot_product_attention', spy)
    return calls


@pytest.mark.parametrize('kernel', ['explicit', 'sliced', 'sdpa'])
@pytest.mark.parametrize('mask_kind', ['none', 'float', 'bool'])
def test_both_kernels_match_reference(kernel, mask_kind, monkeypatch, sdpa_calls):
    if kernel == 'sliced':  # two batch elements' scores per slice: slices of 2, 1
        monkeypatch.setattr(sa, 'CHUNK_SCORES', 2 * 2 * 19 * 19)
    matmuls = []
    real_matmul = torch.matmul
    monkeypatch.setattr(sa.torch, 'matmul', lambda a, b: matmuls.append(a.shape) or
                        real_matmul(a, b))
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 19, 8, requires_grad=True) for _ in range(3))
    mask = {'none': None, 'float': torch.randn(1, 2, 19, 19),
            'bool': torch.rand(3, 1, 1, 19) > 0.3}[mask_kind]
    if mask is not None and mask.dtype == torch.bool:
        mask[..., 0] = True  # every row keeps a key
    with sa.attention_kernel('sdpa' if kernel == 'sdpa' else 'explicit'):
        out = sa.softmax_attention(q, k, v, mask, scale=0.3)
    assert len(sdpa_calls) == (kernel == 'sdpa')
    assert len(matmuls) == {'explicit': 2, 'sliced': 4, 'sdpa': 0}[kernel]
    ref = reference(q, k, v, mask, 0.3)
    torch.testing.assert_close(out, ref.float(), rtol=0, atol=1e-5)
    weight = torch.randn_like(out)
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * weight.double()).sum(), (q, k, v))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r.float(), rtol=1e-5, atol=1e-5)


def test_kernel_choice(sdpa_calls):
    short = [torch.randn(2, 2, sa.EXPLICIT_MAX_TOKENS, 8, requires_grad=True) for _ in range(3)]
    sa.softmax_attention(*short)
    assert sa.uses_explicit_attention(*short[:2]) and not sdpa_calls  # CPU training step
    with torch.no_grad():
        sa.softmax_attention(*short)
    sa.softmax_attention(*(t.detach() for t in short))
    assert not sdpa_calls  # CPU inference over short rows
    long = [torch.randn(1, 1, sa.EXPLICIT_MAX_TOKENS + 1, 8, requires_grad=True)
            for _ in range(3)]
    sa.softmax_attention(*long)
    with torch.no_grad():
        sa.softmax_attention(*long)
    assert len(sdpa_calls) == 2  # long rows: no (L x L) probabilities saved
    meta = [t.to('meta') for t in short]
    assert not sa.uses_explicit_attention(*meta[:2])  # only the CPU has the measured gain


class _Attend(torch.nn.Module):
    def forward(self, q, k, v):
        return sa.softmax_attention(q, k, v)


@pytest.mark.parametrize('program', ['export', 'trace'])
def test_programs_hold_sdpa(program, sdpa_calls):
    """A traced or exported program calls SDPA even for short rows and holds no guard on the
    row length (the exported one runs above and below the explicit rows' limit); it computes
    what the eager (explicit) call does."""
    short = tuple(torch.randn(2, 2, 6, 8) for _ in range(3))
    with torch.no_grad():
        if program == 'export':
            rows = torch.export.Dim('rows', max=4 * sa.EXPLICIT_MAX_TOKENS)
            run = torch.export.export(_Attend(), short,
                                      dynamic_shapes=[{2: rows}] * 3).module()
        else:
            run = torch.jit.trace(_Attend(), short, check_trace=False)
        assert len(sdpa_calls) == 1
        lengths = [6, 2 * sa.EXPLICIT_MAX_TOKENS] if program == 'export' else [6]
        for length in lengths:
            inputs = tuple(torch.randn(2, 2, length, 8) for _ in range(3))
            torch.testing.assert_close(run(*inputs), sa.softmax_attention(*inputs),
                                       rtol=0, atol=1e-6)
    assert len(sdpa_calls) == len(lengths)  # eager: explicit at 6 rows, SDPA above the limit


def test_forced_kernel_overrides_the_choice_and_is_restored(sdpa_calls):
    short = [torch.randn(2, 2, 6, 8, requires_grad=True) for _ in range(3)]
    with sa.attention_kernel('sdpa'):
        assert not sa.uses_explicit_attention(*short[:2])
        sa.softmax_attention(*short)
    assert len(sdpa_calls) == 1
    with torch.no_grad(), sa.attention_kernel('explicit'):
        assert sa.uses_explicit_attention(*short[:2])
        sa.softmax_attention(*short)
    assert len(sdpa_calls) == 1
    with pytest.raises(RuntimeError), sa.attention_kernel('sdpa'):
        raise RuntimeError
    assert sa.uses_explicit_attention(*short[:2])  # back to the measured choice
    with pytest.raises(ValueError, match="unknown kernel 'flash'.*'auto', 'explicit', 'sdpa'"):
        with sa.attention_kernel('flash'):
            pass


def test_dropout_only_in_explicit_training_path():
    q, k, v = (torch.randn(2, 1, 6, 4, requires_grad=True) for _ in range(3))
    torch.manual_seed(1)
    with sa.attention_kernel('explicit'):
        dropped = sa.softmax_attention(q, k, v, dropout_p=0.5)
        kept = sa.softmax_attention(q, k, v)
    assert not torch.allclose(dropped, kept)
    torch.testing.assert_close(kept, reference(q, k, v, None, 0.5).float(), rtol=0, atol=1e-6)
