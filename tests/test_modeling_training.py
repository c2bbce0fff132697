"""Heads without a native counterpart, training features (gradient checkpointing, LoRA, bf16, compile) and the
real EuroBERT tokenizer in pipelines."""

import pytest
import torch
import torch.nn.functional as F

from eurobert_hf import (
    EuroBertConfig,
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertModel,
)
from tests.eurobert_fixtures import padded_batch, tiny_config


def test_question_answering_span_logits_and_loss():
    torch.manual_seed(0)
    model = EuroBertForQuestionAnswering(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    start, end = torch.tensor([1, 2, 0, 3]), torch.tensor([3, 4, 1, 6])
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, start_positions=start, end_positions=end)
        hidden = model.model(input_ids, attention_mask=attention_mask).last_hidden_state
    expected_start, expected_end = model.qa_outputs(hidden).unbind(-1)
    keep = attention_mask.bool()
    torch.testing.assert_close(out.start_logits[keep], expected_start[keep])
    torch.testing.assert_close(out.end_logits[keep], expected_end[keep])
    assert torch.all(out.start_logits[~keep] == torch.finfo(torch.float32).min), "padding is never an answer"
    expected_loss = (
        F.cross_entropy(expected_start.masked_fill(~keep, -1e30), start)
        + F.cross_entropy(expected_end.masked_fill(~keep, -1e30), end)
    ) / 2
    torch.testing.assert_close(out.loss, expected_loss)


@pytest.mark.parametrize("pooling", ["bos", "mean", "late"])
def test_multiple_choice_scores_each_choice_like_sequence_classification(pooling):
    torch.manual_seed(0)
    config = tiny_config(classifier_pooling=pooling, num_labels=1)
    choice_model = EuroBertForMultipleChoice(config).eval()
    scorer = EuroBertForSequenceClassification(config).eval()
    scorer.load_state_dict(choice_model.state_dict())
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 2, 7, 8, 3))
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        out = choice_model(input_ids.view(2, 3, -1), attention_mask=attention_mask.view(2, 3, -1), labels=labels)
        expected = scorer(input_ids, attention_mask=attention_mask).logits.view(2, 3)
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels))


def test_gradient_checkpointing_gives_the_same_gradients():
    input_ids, attention_mask = padded_batch()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = EuroBertForMaskedLM(tiny_config())
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], msg=name)


def test_lora_without_target_modules_trains_adapters_and_the_whole_head():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = EuroBertForSequenceClassification(tiny_config(num_labels=2))
    peft_model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8))
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in name and "q_proj" in name for name in trainable)
    assert any("lora_B" in name and "down_proj" in name for name in trainable)
    assert any(".dense." in name for name in trainable), "EuroBERT's dense head layer must be trained"
    assert any(".classifier." in name for name in trainable)

    before = {name: p.detach().clone() for name, p in peft_model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    input_ids, attention_mask = padded_batch()
    peft_model.train()
    for _ in range(2):  # LoRA B starts at zero: the second step moves A too
        loss = peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 1, 1, 0])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {name for name, p in peft_model.named_parameters() if not torch.equal(p, before[name])}
    assert changed, "a training step must change something"
    assert changed <= trainable
    assert any(".dense." in name for name in changed) and any("lora_A" in name for name in changed)


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config(attn_implementation="sdpa")).eval()
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        fp32 = model(input_ids, attention_mask=attention_mask).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(input_ids, attention_mask=attention_mask).last_hidden_state
    keep = attention_mask.bool()
    assert torch.isfinite(bf16).all()
    assert (bf16.float()[keep] - fp32[keep]).abs().max().item() < 0.1


def test_bf16_weights_forward_and_backward_are_finite():
    torch.manual_seed(0)
    model = EuroBertForMaskedLM(tiny_config()).to(torch.bfloat16)
    input_ids, attention_mask = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, labels=input_ids.masked_fill(attention_mask == 0, -100))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_torch_compile_default_path_matches_eager_mode():
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config(attn_implementation="sdpa")).eval()
    compiled = torch.compile(model)
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        for mask in (None, attention_mask):
            torch.testing.assert_close(
                compiled(input_ids, attention_mask=mask).last_hidden_state,
                model(input_ids, attention_mask=mask).last_hidden_state,
                atol=1e-5,
                rtol=1e-4,
            )


@pytest.mark.slow
def test_flex_attention_matches_sdpa():
    pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(0)
    model = EuroBertModel(tiny_config(attn_implementation="sdpa")).eval()
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).last_hidden_state
        model.set_attn_implementation("flex_attention")
        actual = model(input_ids, attention_mask=attention_mask).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def eurobert_tokenizer():
    from tests.tokenizer_assets import llama3_tokenizer

    return llama3_tokenizer()


def real_vocab_config(tokenizer, **overrides) -> EuroBertConfig:
    return tiny_config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        mask_token_id=tokenizer.mask_token_id,
        **overrides,
    )


def test_real_tokenizer_has_eurobert_special_ids(eurobert_tokenizer):
    tokenizer = eurobert_tokenizer
    assert len(tokenizer) == 128256
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (128000, 128001, 128001)
    assert tokenizer.mask_token_id == 128002
    assert tokenizer("Bonjour <|reserved_special_token_0|>")["input_ids"][-1] == 128002


def test_fill_mask_pipeline_with_the_real_tokenizer(eurobert_tokenizer):
    from transformers import pipeline

    torch.manual_seed(0)
    model = EuroBertForMaskedLM(real_vocab_config(eurobert_tokenizer)).eval()
    fill = pipeline("fill-mask", model=model, tokenizer=eurobert_tokenizer, top_k=3)
    predictions = fill(f"Paris est la capitale de la {eurobert_tokenizer.mask_token}.")
    assert len(predictions) == 3 and all(0.0 <= p["score"] <= 1.0 for p in predictions)
    inputs = eurobert_tokenizer(f"Paris est la capitale de la {eurobert_tokenizer.mask_token}.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, inputs["input_ids"][0].tolist().index(128002)]
    assert predictions[0]["token"] == int(logits.argmax())


def test_text_classification_pipeline_with_the_real_tokenizer(eurobert_tokenizer):
    from transformers import pipeline

    torch.manual_seed(0)
    config = real_vocab_config(
        eurobert_tokenizer, num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    model = EuroBertForSequenceClassification(config).eval()
    classify = pipeline("text-classification", model=model, tokenizer=eurobert_tokenizer)
    texts = ["Das ist gut.", "Ceci est une phrase bien plus longue que la première, pour le padding."]
    results = classify(texts, batch_size=2)
    inputs = eurobert_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**inputs).logits.softmax(-1)
    for result, row in zip(results, probabilities):
        assert result["label"] == config.id2label[int(row.argmax())]
        assert abs(result["score"] - float(row.max())) < 1e-5
