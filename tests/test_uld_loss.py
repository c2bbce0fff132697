"""Tests of `uld_loss` against an independent, straightforward per-sample ULD written here (softmax, full sort,
zero-padding, L1, Python loops), in float32 and float64."""

import math

import pytest
import torch

from eurobert_hf.trainers import uld_losses as uld_module
from eurobert_hf.trainers.uld_losses import SortedTeacherProbs, sort_teacher_probs, uld_loss

IGNORE = -100


def answer_positions(labels, skip_eos):
    """Logit positions predicting an answer token (label at t + 1 is not ignored), in order."""
    positions = [t for t in range(labels.shape[0] - 1) if labels[t + 1] != IGNORE]
    return positions[:-1] if skip_eos and positions else positions


def sorted_padded(probs, size):
    values = torch.sort(probs, descending=True).values
    return torch.cat([values, values.new_zeros(size - values.numel())])


def reference_token_losses(
    student_logits,
    teacher_logits,
    student_labels,
    teacher_labels,
    *,
    student_temperature=1.0,
    teacher_temperature=1.0,
    skip_student_eos=False,
    skip_teacher_eos=False,
    dtype=torch.float64,
):
    """Per sample, the list of ULD terms of its aligned tokens (differentiable w.r.t. student_logits)."""
    vocab = max(student_logits.shape[-1], teacher_logits.shape[-1])
    samples = []
    for b in range(student_logits.shape[0]):
        s_positions = answer_positions(student_labels[b], skip_student_eos)
        t_positions = answer_positions(teacher_labels[b], skip_teacher_eos)
        losses = []
        for s_pos, t_pos in zip(s_positions, t_positions):
            p = torch.softmax(student_logits[b, s_pos].to(dtype) / student_temperature, dim=-1)
            q = torch.softmax(teacher_logits[b, t_pos].to(dtype) / teacher_temperature, dim=-1)
            losses.append((sorted_padded(p, vocab) - sorted_padded(q, vocab)).abs().sum())
        samples.append(losses)
    return samples


def reference_uld(*args, reduction="sample", **kwargs):
    samples = reference_token_losses(*args, **kwargs)
    if reduction == "sum":
        return sum((loss for losses in samples for loss in losses), torch.tensor(0.0, dtype=torch.float64))
    means = [sum(losses) / len(losses) for losses in samples if losses]
    return sum(means) / len(means)


def make_batch(student_vocab, teacher_vocab, dtype=torch.float32, seed=0):
    """4 samples: contiguous answer, non-contiguous (two turns) answer, teacher longer, no student answer."""
    generator = torch.Generator().manual_seed(seed)
    student_logits = (2.0 * torch.randn(4, 12, student_vocab, generator=generator, dtype=torch.float64)).to(dtype)
    teacher_logits = (3.0 * torch.randn(4, 15, teacher_vocab, generator=generator, dtype=torch.float64)).to(dtype)
    student_labels = torch.full((4, 12), IGNORE)
    teacher_labels = torch.full((4, 15), IGNORE)
    student_labels[0, 5:] = 1
    teacher_labels[0, 7:] = 2
    student_labels[1, 2:5] = 1
    student_labels[1, 8:11] = 1
    teacher_labels[1, 1:3] = 2
    teacher_labels[1, 6:9] = 2
    teacher_labels[1, 12:14] = 2
    student_labels[2, 9:] = 1
    teacher_labels[2, 3:] = 2
    teacher_labels[3, 4:] = 2
    return student_logits, teacher_logits, student_labels, teacher_labels


@pytest.fixture(params=["numpy", "torch"])
def backend(request, monkeypatch):
    """Run a test with the host numpy kernels (CPU default) and with the batched torch kernels (accelerator default)."""
    if request.param == "torch":
        monkeypatch.setattr(uld_module, "_NUMPY_DEVICE_TYPES", ())
    return request.param


VOCABS = [(37, 23), (23, 37), (30, 30)]


@pytest.mark.parametrize("vocabs", VOCABS)
@pytest.mark.parametrize("temperatures", [(1.0, 1.0), (0.5, 2.0)])
@pytest.mark.parametrize("skips", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("reduction", ["sample", "sum"])
def test_matches_straightforward_reference(vocabs, temperatures, skips, reduction, backend):
    batch = make_batch(*vocabs)
    options = dict(
        student_temperature=temperatures[0],
        teacher_temperature=temperatures[1],
        skip_student_eos=skips[0],
        skip_teacher_eos=skips[1],
    )
    value = uld_loss(*batch, reduction=reduction, **options)
    assert value.dtype == torch.float32
    for dtype in (torch.float32, torch.float64):
        expected = reference_uld(*batch, reduction=reduction, dtype=dtype, **options)
        torch.testing.assert_close(value.double(), expected.double(), rtol=1e-5, atol=1e-7)


def test_sample_reduction_by_hand(backend):
    # Student (0.7, 0.2, 0.1) vs teacher (0.5, 0.5): sorted and padded, |0.7-0.5| + |0.2-0.5| + |0.1-0| = 0.6.
    # Second sample (one token): identical distributions, 0. Mean over samples: 0.3.
    student_logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.7, 0.2]], [[0.25, 0.5, 0.25], [1.0, 1, 1]]]))
    teacher_logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.5, 0.5]]]))
    teacher_logits = torch.cat([teacher_logits, torch.full((2, 2, 1), -math.inf)], dim=-1)
    teacher_logits[1, 0] = torch.log(torch.tensor([0.25, 0.25, 0.5]))
    student_labels = torch.tensor([[IGNORE, 5], [IGNORE, 5]])
    teacher_labels = torch.tensor([[IGNORE, 1], [IGNORE, 1]])
    torch.testing.assert_close(uld_loss(student_logits, teacher_logits, student_labels, teacher_labels).item(), 0.3)
    torch.testing.assert_close(
        uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, reduction="sum").item(), 0.6
    )


@pytest.mark.parametrize("vocabs", VOCABS)
def test_gradients_match_reference_autograd(vocabs, backend):
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(*vocabs, dtype=torch.float64)
    student_logits.requires_grad_()
    options = dict(student_temperature=0.7, teacher_temperature=1.5, skip_student_eos=True)
    for reduction in ("sample", "sum"):
        (grad,) = torch.autograd.grad(
            uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, reduction=reduction, **options),
            student_logits,
        )
        expected = reference_uld(
            student_logits, teacher_logits, student_labels, teacher_labels, reduction=reduction, **options
        )
        (expected_grad,) = torch.autograd.grad(expected, student_logits)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)
        assert grad[3].abs().sum() == 0  # no aligned token in sample 3


@pytest.fixture
def one_torch_thread():
    """Hundreds of tiny forward passes: torch's intra-op threads only add synchronisation there."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("vocabs", [(7, 5), (5, 7)])
@pytest.mark.parametrize("top_k", [None, 3])
def test_gradcheck(vocabs, top_k, one_torch_thread, backend):
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(*vocabs, dtype=torch.float64)
    student_logits = student_logits[:3, :, :].clone().requires_grad_()
    teacher_logits, student_labels, teacher_labels = teacher_logits[:3], student_labels[:3], teacher_labels[:3]
    assert torch.autograd.gradcheck(
        lambda x: uld_loss(x, teacher_logits, student_labels, teacher_labels, student_temperature=0.8, top_k=top_k),
        (student_logits,),
    )


@pytest.mark.parametrize("vocabs", [(300, 500), (500, 300)])
def test_float32_gradients_match_float64_reference(vocabs, backend):
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(*vocabs)
    student_logits.requires_grad_()
    uld_loss(student_logits, teacher_logits, student_labels, teacher_labels).backward()
    logits64 = student_logits.detach().double().requires_grad_()
    reference_uld(logits64, teacher_logits, student_labels, teacher_labels).backward()
    torch.testing.assert_close(student_logits.grad.double(), logits64.grad, rtol=1e-4, atol=1e-7)
    # top_k: the float32 path (packed-key sort) agrees with the float64 path (argsort), itself checked by autograd.
    student_logits.grad = logits64.grad = None
    uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, top_k=50).backward()
    uld_loss(logits64, teacher_logits.double(), student_labels, teacher_labels, top_k=50).backward()
    torch.testing.assert_close(student_logits.grad.double(), logits64.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("vocabs", [(200, 300), (300, 200)])
@pytest.mark.parametrize("top_k", [None, 20])
def test_every_backward_strategy_gives_the_same_gradient(monkeypatch, vocabs, top_k):
    """Value thresholds (few sign changes), the re-sorted permutation, and the full recomputation agree exactly."""
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(*vocabs)
    student_logits.requires_grad_()

    def gradient():
        value = uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, top_k=top_k)
        return torch.autograd.grad(value, student_logits)[0]

    by_thresholds = gradient()
    monkeypatch.setattr(uld_module, "_MAX_VALUE_THRESHOLDS", 0)
    by_permutation = gradient()
    monkeypatch.setattr(uld_module, "_MAX_STORED_RUNS", 0)
    recomputed = gradient()
    assert by_thresholds.abs().sum() > 0
    torch.testing.assert_close(by_permutation, by_thresholds, rtol=0, atol=0)
    torch.testing.assert_close(recomputed, by_thresholds, rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_chunking_and_threads_do_not_change_the_result(monkeypatch, threads):
    batch = make_batch(50, 70)
    batch[0].requires_grad_()
    value = uld_loss(*batch)
    (grad,) = torch.autograd.grad(value, batch[0])
    monkeypatch.setattr(uld_module, "_CHUNK_SIZE", 3)
    monkeypatch.setattr(uld_module, "_PARALLEL_MIN_ELEMENTS", 0)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        chunked = uld_loss(*batch)
        (chunked_grad,) = torch.autograd.grad(chunked, batch[0])
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(chunked, value, rtol=1e-6, atol=0)
    torch.testing.assert_close(chunked_grad, grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype, backend):
    batch = make_batch(40, 60, dtype=dtype)
    batch[0].requires_grad_()
    value = uld_loss(*batch, student_temperature=0.9)
    assert value.dtype == torch.float32
    expected = reference_uld(*batch, student_temperature=0.9, dtype=torch.float64)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=0)
    value.backward()
    assert batch[0].grad.dtype == dtype and torch.isfinite(batch[0].grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", [0.05, 1.0, 3.0])
def test_huge_magnitude_logits_stay_finite(dtype, temperature, backend):
    largest = torch.finfo(dtype).max
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(20, 30)
    student_logits = (student_logits.sign() * largest * torch.rand(student_logits.shape)).to(dtype).requires_grad_()
    teacher_logits = (teacher_logits.sign() * largest).to(dtype)
    options = dict(student_temperature=temperature, teacher_temperature=temperature)
    value = uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, **options)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(student_logits.grad).all()
    expected = reference_uld(student_logits, teacher_logits, student_labels, teacher_labels, **options)
    torch.testing.assert_close(value.double(), expected.detach(), rtol=1e-5, atol=1e-6)


def test_identical_distributions_give_zero(backend):
    student_logits, _, student_labels, _ = make_batch(30, 30)
    student_logits.requires_grad_()
    value = uld_loss(student_logits, student_logits.detach().clone(), student_labels, student_labels)
    assert value.item() == 0.0
    value.backward()
    assert student_logits.grad.abs().max() < 1e-7


def test_permuted_vocabularies_give_zero(backend):
    student_logits, _, student_labels, _ = make_batch(30, 30)
    permuted = student_logits[..., torch.randperm(30, generator=torch.Generator().manual_seed(3))]
    assert uld_loss(student_logits, permuted, student_labels, student_labels).item() == pytest.approx(0.0, abs=1e-6)
    # A larger teacher vocabulary whose extra tokens have probability 0 (masked with -inf) is the same distribution.
    widened = torch.cat([permuted, torch.full((*permuted.shape[:2], 9), -math.inf)], dim=-1)
    assert uld_loss(student_logits, widened, student_labels, student_labels).item() == pytest.approx(0.0, abs=1e-6)


def test_no_aligned_token_returns_zero_with_a_gradient_path(backend):
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(10, 12)
    student_logits.requires_grad_()
    for labels in (torch.full_like(student_labels, IGNORE), student_labels):
        teacher_none = torch.full_like(teacher_labels, IGNORE)
        for reduction in ("sample", "sum"):
            value = uld_loss(student_logits, teacher_logits, labels, teacher_none, reduction=reduction)
            assert value.item() == 0.0 and value.requires_grad
            (grad,) = torch.autograd.grad(value, student_logits)
            assert grad.abs().sum() == 0


def test_eos_skipping_drops_the_last_answer_token(backend):
    # One answer token per side: skipping either EOS leaves nothing aligned.
    student_logits, teacher_logits, _, _ = make_batch(10, 12)
    student_labels = torch.full((4, 12), IGNORE)
    teacher_labels = torch.full((4, 15), IGNORE)
    student_labels[:, 3] = 1
    teacher_labels[:, 9] = 1
    assert uld_loss(student_logits, teacher_logits, student_labels, teacher_labels).item() > 0
    for skips in ((True, False), (False, True)):
        value = uld_loss(
            student_logits,
            teacher_logits,
            student_labels,
            teacher_labels,
            skip_student_eos=skips[0],
            skip_teacher_eos=skips[1],
        )
        assert value.item() == 0.0


def test_teacher_gets_no_gradient():
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(10, 12)
    student_logits.requires_grad_()
    teacher_logits.requires_grad_()
    uld_loss(student_logits, teacher_logits, student_labels, teacher_labels).backward()
    assert teacher_logits.grad is None and student_logits.grad.abs().sum() > 0


def test_gradient_scales_with_the_upstream_gradient():
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(10, 12, dtype=torch.float64)
    student_logits.requires_grad_()
    (grad,) = torch.autograd.grad(
        uld_loss(student_logits, teacher_logits, student_labels, teacher_labels), student_logits
    )
    (tripled,) = torch.autograd.grad(
        3.0 * uld_loss(student_logits, teacher_logits, student_labels, teacher_labels), student_logits
    )
    torch.testing.assert_close(tripled, 3.0 * grad)


def top_k_masses(student_logits, teacher_logits, student_labels, teacher_labels, k):
    """Per aligned token (in order): top-k masses (S_k, T_k) of student and teacher."""
    masses = []
    for b in range(student_logits.shape[0]):
        pairs = zip(answer_positions(student_labels[b], False), answer_positions(teacher_labels[b], False))
        for s_pos, t_pos in pairs:
            p = torch.softmax(student_logits[b, s_pos].double(), dim=-1)
            q = torch.softmax(teacher_logits[b, t_pos].double(), dim=-1)
            masses.append((p.topk(min(k, p.numel())).values.sum(), q.topk(min(k, q.numel())).values.sum()))
    return masses


@pytest.mark.parametrize("vocabs", [(37, 23), (23, 37)])
@pytest.mark.parametrize("k", [1, 4, 15])
def test_top_k_error_is_within_the_documented_bound(vocabs, k, backend):
    batch = make_batch(*vocabs)
    exact = [loss for losses in reference_token_losses(*batch) for loss in losses]
    masses = top_k_masses(*batch, k)
    student_logits, teacher_logits, student_labels, teacher_labels = batch
    token = 0
    for b in range(4):
        # One aligned token at a time, through reduction="sum".
        s_positions, t_positions = (
            answer_positions(student_labels[b], False),
            answer_positions(teacher_labels[b], False),
        )
        for s_pos, t_pos in zip(s_positions, t_positions):
            s_labels = torch.full_like(student_labels, IGNORE)
            t_labels = torch.full_like(teacher_labels, IGNORE)
            s_labels[b, s_pos + 1] = 0
            t_labels[b, t_pos + 1] = 0
            approx = uld_loss(student_logits, teacher_logits, s_labels, t_labels, top_k=k, reduction="sum").double()
            s_k, t_k = masses[token]
            bound = (1 - s_k) + (1 - t_k)
            assert approx <= exact[token] + 1e-6
            assert exact[token] - approx <= bound + 1e-6
            token += 1
    assert token == len(exact) > 10


@pytest.mark.parametrize("vocabs", [(37, 23), (23, 37)])
def test_top_k_covering_a_vocabulary_is_exact(vocabs, backend):
    batch = make_batch(*vocabs)
    exact = uld_loss(*batch)
    for k in (min(vocabs), max(vocabs), 1000):
        torch.testing.assert_close(uld_loss(*batch, top_k=k), exact, rtol=1e-6, atol=0)


def test_top_k_gradient_matches_autograd_of_the_top_k_formula(backend):
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(20, 30, dtype=torch.float64)
    student_logits.requires_grad_()
    k = 6
    value = uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, top_k=k)
    (grad,) = torch.autograd.grad(value, student_logits)
    means = []
    for b in range(4):
        pairs = list(zip(answer_positions(student_labels[b], False), answer_positions(teacher_labels[b], False)))
        if not pairs:
            continue
        terms = []
        for s_pos, t_pos in pairs:
            p_top = torch.softmax(student_logits[b, s_pos], dim=-1).topk(k).values
            q_top = torch.softmax(teacher_logits[b, t_pos], dim=-1).topk(k).values
            terms.append((p_top - q_top).abs().sum() + ((1 - p_top.sum()) - (1 - q_top.sum())).abs())
        means.append(sum(terms) / len(terms))
    expected = sum(means) / len(means)
    (expected_grad,) = torch.autograd.grad(expected, student_logits)
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-10)


def test_sort_teacher_probs_contents():
    _, teacher_logits, _, teacher_labels = make_batch(10, 12)
    cache = sort_teacher_probs(teacher_logits, teacher_labels, temperature=2.0, top_k=5)
    counts = [len(answer_positions(teacher_labels[b], False)) for b in range(4)]
    assert cache.num_tokens.tolist() == counts
    assert cache.values.shape == (4, max(counts), 5) and cache.remaining_mass.shape == (4, max(counts))
    for b in range(4):
        for i, pos in enumerate(answer_positions(teacher_labels[b], False)):
            probs = torch.softmax(teacher_logits[b, pos].double() / 2.0, dim=-1)
            top = probs.topk(5).values
            torch.testing.assert_close(cache.values[b, i].double(), top, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(cache.remaining_mass[b, i].double(), 1 - top.sum(), rtol=1e-5, atol=1e-7)
        assert cache.values[b, counts[b] :].abs().sum() == 0
    full = sort_teacher_probs(teacher_logits, teacher_labels)
    assert full.values.shape[-1] == 12 and full.remaining_mass.abs().sum() == 0


@pytest.mark.parametrize("vocabs", VOCABS)
@pytest.mark.parametrize("skip_teacher_eos", [False, True])
def test_sorted_teacher_probs_equal_the_live_teacher(vocabs, skip_teacher_eos, backend):
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(*vocabs)
    student_logits.requires_grad_()
    options = dict(teacher_temperature=1.7, skip_teacher_eos=skip_teacher_eos, skip_student_eos=True)
    cached_options = dict(options, teacher_temperature=1.0)  # the temperature was applied when sorting
    live = uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, **options)
    for top_k in (None, vocabs[1], 10**6):
        cache = sort_teacher_probs(teacher_logits, teacher_labels, temperature=1.7, top_k=top_k)
        cached = uld_loss(student_logits, cache, student_labels, None, **cached_options)
        # Equal up to float32 summation order (the live teacher sums its tail beyond the student's vocabulary size
        # straight from a partition, the cache from its sorted values).
        torch.testing.assert_close(cached, live, rtol=1e-6, atol=0)
        (cached_grad,) = torch.autograd.grad(cached, student_logits)
        (live_grad,) = torch.autograd.grad(live, student_logits, retain_graph=True)
        torch.testing.assert_close(cached_grad, live_grad, rtol=1e-5, atol=1e-8)
    # A top-k cache behaves like the live teacher with the same top_k.
    cache = sort_teacher_probs(teacher_logits, teacher_labels, temperature=1.7, top_k=4)
    torch.testing.assert_close(
        uld_loss(student_logits, cache, student_labels, None, **cached_options),
        uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, top_k=4, **options),
        rtol=1e-6,
        atol=0,
    )


def test_bad_inputs_raise_clear_errors():
    student_logits, teacher_logits, student_labels, teacher_labels = make_batch(10, 12)
    good = (student_logits, teacher_logits, student_labels, teacher_labels)

    def raises(match, *args, **kwargs):
        with pytest.raises(ValueError, match=match):
            uld_loss(*args, **kwargs)

    raises("reduction must be one of", *good, reduction="mean")
    for bad in (0.0, -1.0, math.nan, math.inf, True):
        raises("student_temperature must be a finite number > 0", *good, student_temperature=bad)
        raises("teacher_temperature must be a finite number > 0", *good, teacher_temperature=bad)
    for bad in (0, -3, 2.5, True):
        raises("top_k must be None", *good, top_k=bad)
    raises("ignore_index must be an integer", *good, ignore_index=None)
    raises("student_logits must be a floating tensor", student_logits[0], *good[1:])
    raises("teacher_logits must be a floating tensor", student_logits, teacher_labels, student_labels, teacher_labels)
    raises("student_labels must have shape", student_logits, teacher_logits, student_labels[:, :-1], teacher_labels)
    raises("teacher_labels must be an integer tensor", *good[:3], teacher_labels.float())
    raises("batch sizes differ", student_logits, teacher_logits[:3], student_labels, teacher_labels[:3])
    nan_logits = student_logits.clone()
    nan_logits[0, 6, 2] = math.nan
    raises("student_logits contain NaN", nan_logits, *good[1:])
    inf_logits = teacher_logits.clone()
    inf_logits[0, 8, 2] = math.inf
    raises("teacher_logits contain NaN or \\+inf", student_logits, inf_logits, student_labels, teacher_labels)
    cache = sort_teacher_probs(teacher_logits, teacher_labels)
    raises("teacher_labels must be None", student_logits, cache, student_labels, teacher_labels)
    with pytest.raises(ValueError, match="remaining_mass must be a floating tensor"):
        SortedTeacherProbs(cache.values, cache.remaining_mass[:, :-1], cache.num_tokens)
    with pytest.raises(ValueError, match="num_tokens must lie in"):
        SortedTeacherProbs(cache.values, cache.remaining_mass, cache.num_tokens + 100)
    with pytest.raises(ValueError, match="values must be a floating tensor"):
        SortedTeacherProbs(cache.values[0], cache.remaining_mass, cache.num_tokens)
    with pytest.raises(ValueError, match="top_k must be None"):
        sort_teacher_probs(teacher_logits, teacher_labels, top_k=0)
    unsorted = SortedTeacherProbs(cache.values.flip(-1), cache.remaining_mass, cache.num_tokens)
    raises("must be sorted in decreasing order", student_logits, unsorted, student_labels, None)
    negative = SortedTeacherProbs(cache.values - 1.0, cache.remaining_mass, cache.num_tokens)
    raises("negative probabilities", student_logits, negative, student_labels, None)
    nan_cache = SortedTeacherProbs(cache.values.clone(), cache.remaining_mass, cache.num_tokens)
    nan_cache.values[0, 0, 0] = math.nan
    raises("NaN or inf probabilities", student_logits, nan_cache, student_labels, None)
    raises("student_labels are on meta", student_logits, teacher_logits, student_labels.to("meta"), teacher_labels)
