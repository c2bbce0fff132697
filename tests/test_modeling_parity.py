"""Numerical parity with transformers' native EuroBERT (transformers >= 5.3) on the same random weights."""

import pytest
import torch

from eurobert_hf import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
)
from tests.eurobert_fixtures import SHAPES, padded_batch, tiny_config_kwargs

TOLERANCE = 1e-5

HEADS = {
    "base": ("EuroBertModel", EuroBertModel),
    "mlm": ("EuroBertForMaskedLM", EuroBertForMaskedLM),
    "seq": ("EuroBertForSequenceClassification", EuroBertForSequenceClassification),
    "tok": ("EuroBertForTokenClassification", EuroBertForTokenClassification),
}


@pytest.fixture(scope="module")
def native():
    return pytest.importorskip("transformers.models.eurobert", reason="native EuroBERT needs transformers >= 5.3")


def build_pair(native, head: str, shape: str, attn: str, **config_overrides):
    """Our model and the native one with identical weights."""
    native_name, ours_class = HEADS[head]
    kwargs = tiny_config_kwargs(shape, **config_overrides)
    torch.manual_seed(0)
    ours = ours_class(EuroBertConfig(**kwargs, attn_implementation=attn)).eval()
    kwargs["rope_parameters"] = dict(ours.config.rope_parameters)
    native_config = native.EuroBertConfig(**kwargs)
    native_config._attn_implementation = attn
    theirs = getattr(native, native_name)(native_config).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def max_diff_on_tokens(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    keep = mask.bool()
    return (a[keep] - b[keep]).abs().max().item()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_base_model_hidden_states_match_native(native, shape, attn):
    ours, theirs = build_pair(native, "base", shape, attn)
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        b = theirs(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    assert max_diff_on_tokens(a.last_hidden_state, b.last_hidden_state, attention_mask) <= TOLERANCE
    assert len(a.hidden_states) == len(b.hidden_states) == ours.config.num_hidden_layers + 1
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert max_diff_on_tokens(x, y, attention_mask) <= TOLERANCE


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_masked_lm_logits_and_loss_match_native(native, shape, attn):
    ours, theirs = build_pair(native, "mlm", shape, attn)
    input_ids, attention_mask = padded_batch()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, ::2] = -100
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask, labels=labels)
        b = theirs(input_ids, attention_mask=attention_mask, labels=labels)
    assert max_diff_on_tokens(a.logits, b.logits, attention_mask) <= TOLERANCE
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=TOLERANCE)


PROBLEMS = [("single_label_classification", 3), ("multi_label_classification", 3), ("regression", 1)]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("pooling", ["bos", "mean", "late"])
def test_sequence_classification_matches_native(native, shape, attn, pooling):
    check_sequence_classification(native, shape, attn, pooling, *PROBLEMS[0])


@pytest.mark.parametrize("pooling", ["bos", "mean", "late"])
@pytest.mark.parametrize("problem_type,num_labels", PROBLEMS[1:])
def test_sequence_classification_losses_match_native(native, pooling, problem_type, num_labels):
    check_sequence_classification(native, "head_dim", "sdpa", pooling, problem_type, num_labels)


def check_sequence_classification(native, shape, attn, pooling, problem_type, num_labels):
    ours, theirs = build_pair(native, "seq", shape, attn, classifier_pooling=pooling, num_labels=num_labels)
    input_ids, attention_mask = padded_batch()
    batch = input_ids.shape[0]
    if problem_type == "single_label_classification":
        labels = torch.tensor([0, 2, 1, 2])
    elif problem_type == "multi_label_classification":
        labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    else:
        labels = torch.randn(batch)
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask, labels=labels)
        b = theirs(input_ids, attention_mask=attention_mask, labels=labels)
    assert ours.config.problem_type == theirs.config.problem_type == problem_type
    assert (a.logits - b.logits).abs().max().item() <= TOLERANCE
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_token_classification_matches_native(native, shape, attn):
    ours, theirs = build_pair(native, "tok", shape, attn, num_labels=5)
    input_ids, attention_mask = padded_batch()
    labels = torch.randint(0, 5, input_ids.shape).masked_fill(attention_mask == 0, -100)
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask, labels=labels)
        b = theirs(input_ids, attention_mask=attention_mask, labels=labels)
    assert max_diff_on_tokens(a.logits, b.logits, attention_mask) <= TOLERANCE
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=TOLERANCE)


def test_eager_attention_maps_match_native(native):
    ours, theirs = build_pair(native, "base", "gqa", "eager")
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask, output_attentions=True)
        b = theirs(input_ids, attention_mask=attention_mask, output_attentions=True)
    assert len(a.attentions) == len(b.attentions) == 2
    for x, y in zip(a.attentions, b.attentions):
        query_rows = attention_mask.bool()[:, None, :, None].expand_as(x)
        assert (x[query_rows] - y[query_rows]).abs().max().item() <= TOLERANCE


def test_yarn_rope_scaling_matches_native(native):
    rope = {"rope_type": "yarn", "factor": 2.0, "rope_theta": 250000.0, "original_max_position_embeddings": 32}
    ours, theirs = build_pair(native, "base", "gqa", "sdpa", rope_parameters=rope)
    input_ids, attention_mask = padded_batch(lengths=(40, 12), seq_len=40)
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask).last_hidden_state
        b = theirs(input_ids, attention_mask=attention_mask).last_hidden_state
    assert max_diff_on_tokens(a, b, attention_mask) <= TOLERANCE


@pytest.mark.parametrize("pooling", ["bos", "mean", "late"])
def test_config_saved_by_plugin_loads_in_native_with_same_outputs(native, tmp_path, pooling):
    torch.manual_seed(0)
    ours = EuroBertForSequenceClassification(
        EuroBertConfig(**tiny_config_kwargs("head_dim", classifier_pooling=pooling, num_labels=3))
    ).eval()
    ours.save_pretrained(tmp_path)
    theirs = native.EuroBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert theirs.config.classifier_pooling == pooling
    assert theirs.config.rope_parameters["rope_theta"] == 250000.0
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask).logits
        b = theirs(input_ids, attention_mask=attention_mask).logits
    assert (a - b).abs().max().item() <= TOLERANCE


def test_checkpoint_saved_by_native_loads_without_missing_keys(native, tmp_path):
    torch.manual_seed(0)
    native_config = native.EuroBertConfig(
        **tiny_config_kwargs("gqa"), rope_parameters={"rope_type": "default", "rope_theta": 250000.0}
    )
    theirs = native.EuroBertForMaskedLM(native_config).eval()
    theirs.save_pretrained(tmp_path)
    ours, info = EuroBertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        a = ours.eval()(input_ids, attention_mask=attention_mask).logits
        b = theirs(input_ids, attention_mask=attention_mask).logits
    assert max_diff_on_tokens(a, b, attention_mask) <= TOLERANCE
