"""EuroBERT as a sentence-transformers embedding model (the folder is written without sentence-transformers)."""

import json
import re

import pytest
import torch

from eurobert_hf.hub import render_eurobert_model_card, save_sentence_transformer, sentence_transformers_files
from eurobert_hf.modeling import EuroBertForMaskedLM, EuroBertModel
from tests.hub_fixtures import last_json_line, run_without_plugin, tiny_model, tiny_tokenizer

SENTENCES = ["EuroBERT speaks many languages.", "Marie Curie worked in Paris .", "the moon"]


def reference_embeddings(model, tokenizer, normalize=True, pooling="mean"):
    """Masked mean (or first token) of the plugin encoder's last hidden states, in float64, then L2-normalised."""
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.base_model(**batch).last_hidden_state.double()
    if pooling == "mean":
        mask = batch["attention_mask"].unsqueeze(-1).double()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    else:
        pooled = hidden[:, 0]
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


@pytest.fixture(scope="module")
def embedding_folder(tmp_path_factory):
    model, tokenizer = tiny_model(EuroBertModel), tiny_tokenizer()
    card = render_eurobert_model_card("user/eurobert-embed", task="sentence-similarity", model=model)
    folder = save_sentence_transformer(model, tokenizer, tmp_path_factory.mktemp("st") / "embed", model_card=card)
    return folder, reference_embeddings(model, tokenizer)


def test_folder_layout_without_sentence_transformers(embedding_folder):
    folder, _ = embedding_folder
    modules = json.loads((folder / "modules.json").read_text())
    assert [module["type"] for module in modules] == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Normalize",
    ]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 32 and pooling["pooling_mode_mean_tokens"] is True
    assert not pooling["pooling_mode_cls_token"]
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    assert (folder / "2_Normalize").is_dir() and (folder / "modeling_eurobert.py").is_file()
    readme = (folder / "README.md").read_text()
    assert "pipeline_tag: sentence-similarity" in readme and "library_name: sentence-transformers" in readme


def test_bad_embedding_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown embedding pooling 'max'"):
        sentence_transformers_files(8, pooling="max")
    with pytest.raises(ValueError, match="max_seq_length"):
        sentence_transformers_files(8, max_seq_length=0)
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        save_sentence_transformer(tiny_model(EuroBertModel), None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_head_model_saves_its_encoder_with_cls_pooling(tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    model, tokenizer = tiny_model(EuroBertForMaskedLM), tiny_tokenizer()
    folder = save_sentence_transformer(model, tokenizer, tmp_path / "cls", pooling="cls", normalize=False)
    assert "lm_head" not in json.dumps(json.loads((folder / "config.json").read_text()))
    embeddings = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    expected = reference_embeddings(model, tokenizer, normalize=False, pooling="cls")
    torch.testing.assert_close(embeddings.double(), expected, rtol=0, atol=1e-5)


def test_sentence_transformers_with_plugin_matches_manual_mean_pooling(embedding_folder):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    folder, expected = embedding_folder
    model = SentenceTransformer(str(folder), device="cpu")
    assert type(model[0].auto_model).__module__.startswith("eurobert_hf.modeling")
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(embeddings.double(), expected, rtol=0, atol=1e-5)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_sentence_transformers_without_plugin_through_remote_code(embedding_folder, tmp_path):
    pytest.importorskip("sentence_transformers")
    folder, expected = embedding_folder
    card_blocks = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.DOTALL)
    sentence_transformers_snippet, transformers_snippet = (
        block.replace('"user/eurobert-embed"', repr(str(folder))) for block in card_blocks
    )
    script = f"""
    import contextlib, io, json
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer({str(folder)!r}, device="cpu", trust_remote_code=True)
    embeddings = model.encode({SENTENCES!r})
    with contextlib.redirect_stdout(io.StringIO()):
        exec({sentence_transformers_snippet!r}, {{}})
    namespace = {{}}
    exec({transformers_snippet!r}, namespace)
    print(json.dumps({{
        "module": type(model[0].auto_model).__module__,
        "embeddings": embeddings.tolist(),
        "card_snippet_embedding": namespace["embeddings"][0].tolist(),
    }}))
    """
    result = last_json_line(run_without_plugin(script, tmp_path))
    assert result["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(result["embeddings"], dtype=torch.float64), expected, rtol=0, atol=1e-5)
    # The card's plain-transformers recipe gives the same embedding as sentence-transformers.
    snippet_embedding = torch.tensor(result["card_snippet_embedding"], dtype=torch.float64)
    torch.testing.assert_close(snippet_embedding, expected[0], rtol=0, atol=1e-5)
