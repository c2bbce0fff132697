"""Remote-code export: the saved folder loads for everyone, with or without eurobert_hf, on every transformers."""

import json

import pytest
import torch
import transformers
from packaging import version

from eurobert_hf.hub import (
    EUROBERT_AUTO_MAP,
    REMOTE_CODE_FILES,
    export_remote_code,
    remove_dangling_auto_map,
    save_for_hub,
)
from eurobert_hf.hub.remote_code import check_self_contained
from eurobert_hf.modeling import (
    EuroBertForMaskedLM,
    EuroBertForMultipleChoice,
    EuroBertForQuestionAnswering,
    EuroBertForSequenceClassification,
    EuroBertForTokenClassification,
    EuroBertModel,
    configuration_eurobert,
    modeling_eurobert,
)
from tests.hub_fixtures import last_json_line, run_python, run_without_plugin, tiny_model

NATIVE_EUROBERT = version.parse(transformers.__version__) >= version.parse("5.3.0")

# head class -> (Auto class, output names, config overrides); the heads native transformers also has come first.
HEADS = {
    "EuroBertModel": (EuroBertModel, "AutoModel", ["last_hidden_state"], {}),
    "EuroBertForMaskedLM": (EuroBertForMaskedLM, "AutoModelForMaskedLM", ["logits"], {}),
    "EuroBertForSequenceClassification": (
        EuroBertForSequenceClassification,
        "AutoModelForSequenceClassification",
        ["logits"],
        {"num_labels": 3, "classifier_pooling": "mean"},
    ),
    "EuroBertForTokenClassification": (
        EuroBertForTokenClassification,
        "AutoModelForTokenClassification",
        ["logits"],
        {"num_labels": 5},
    ),
    "EuroBertForQuestionAnswering": (
        EuroBertForQuestionAnswering,
        "AutoModelForQuestionAnswering",
        ["start_logits", "end_logits"],
        {},
    ),
    "EuroBertForMultipleChoice": (EuroBertForMultipleChoice, "AutoModelForMultipleChoice", ["logits"], {}),
}
NATIVE_HEADS = list(HEADS)[:4]

INPUT_IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 3], [2, 10, 11, 3, 0, 0, 0]])
ATTENTION_MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])

# Loads every folder listed in the spec file with its Auto class, checks where the classes come from, and prints the
# largest difference to the plugin's outputs (on real tokens only: padding positions carry no meaning).
LOAD_AND_COMPARE = """
import json, sys
import torch
import transformers

spec = torch.load(SPEC_PATH)
report = {}
for name, entry in spec.items():
    auto_class = getattr(transformers, entry["auto_class"])
    kwargs = {"trust_remote_code": True} if MODE == "remote" else {}
    model = auto_class.from_pretrained(entry["folder"], **kwargs).eval()
    with torch.no_grad():
        outputs = model(**entry["inputs"])
    mask = entry["mask"]
    difference = 0.0
    for output_name, expected in entry["outputs"].items():
        actual = outputs[output_name]
        assert actual.shape == expected.shape, (name, output_name, actual.shape, expected.shape)
        real = mask.bool() if actual.dim() >= mask.dim() and actual.shape[: mask.dim()] == mask.shape else None
        if real is not None:
            actual, expected = actual[real], expected[real]
        difference = max(difference, (actual - expected).abs().max().item())
    report[name] = {
        "model_module": type(model).__module__,
        "config_module": type(model.config).__module__,
        "classifier_pooling": getattr(model.config, "classifier_pooling", None),
        "max_abs_diff": difference,
    }
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def saved_heads(tmp_path_factory):
    """Every head saved with remote code, and the plugin's outputs on a right-padded batch."""
    root = tmp_path_factory.mktemp("remote_code")
    spec = {}
    for name, (model_class, auto_class, output_names, overrides) in HEADS.items():
        model = tiny_model(model_class, seed=len(spec), **overrides)
        inputs = {"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK}
        if model_class is EuroBertForMultipleChoice:
            inputs = {key: torch.stack([value, value.flip(0)], dim=0) for key, value in inputs.items()}
        with torch.no_grad():
            outputs = model(**inputs)
        folder = save_for_hub(model, root / name)
        spec[name] = {
            "auto_class": auto_class,
            "folder": str(folder),
            "inputs": inputs,
            "mask": inputs["attention_mask"],
            "outputs": {output_name: outputs[output_name] for output_name in output_names},
        }
    torch.save(spec, root / "spec.pt")
    return root, spec


def _script(mode: str, spec_path) -> str:
    return f"MODE = {mode!r}\nSPEC_PATH = {str(spec_path)!r}\n" + LOAD_AND_COMPARE


def _subset_spec(root, spec, names):
    path = root / f"spec-{'-'.join(sorted(names))}.pt"
    torch.save({name: spec[name] for name in names}, path)
    return path


def test_export_writes_package_files_and_full_pinned_auto_map(saved_heads):
    root, spec = saved_heads
    folder = root / "EuroBertForSequenceClassification"
    for module in (configuration_eurobert, modeling_eurobert):
        name = module.__file__.rsplit("/", 1)[-1]
        assert name in REMOTE_CODE_FILES
        assert (folder / name).read_text() == open(module.__file__).read()
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == EUROBERT_AUTO_MAP
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForMaskedLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
        "AutoModelForQuestionAnswering",
        "AutoModelForMultipleChoice",
    }
    assert not any("--" in reference for reference in config["auto_map"].values())
    assert config["classifier_pooling"] == "mean"


def test_export_replaces_cross_repo_auto_map_and_refuses_other_models(tmp_path):
    model = tiny_model(EuroBertForMaskedLM)
    model.save_pretrained(tmp_path / "hub_era")
    config_path = tmp_path / "hub_era" / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoModel": "EuroBERT/EuroBERT-210m--modeling_eurobert.EuroBertModel"}
    config_path.write_text(json.dumps(config))
    remove_dangling_auto_map(tmp_path / "hub_era")
    assert "auto_map" not in json.loads(config_path.read_text())
    export_remote_code(tmp_path / "hub_era")
    assert json.loads(config_path.read_text())["auto_map"] == EUROBERT_AUTO_MAP

    with pytest.raises(FileNotFoundError, match="save the model there first"):
        export_remote_code(tmp_path / "empty")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="only for EuroBERT"):
        export_remote_code(tmp_path / "llama")


def test_save_without_remote_code_keeps_no_dangling_auto_map(tmp_path):
    model = tiny_model(EuroBertForMaskedLM)
    model.config.auto_map = {"AutoModelForMaskedLM": "EuroBERT/EuroBERT-210m--modeling_eurobert.EuroBertForMaskedLM"}
    folder = save_for_hub(model, tmp_path / "plain", remote_code=False)
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    assert not any((folder / name).exists() for name in REMOTE_CODE_FILES)


def test_self_containment_check_rejects_foreign_imports():
    check_self_contained("import math\nimport torch\nfrom transformers import PretrainedConfig\n", "ok.py")
    check_self_contained("from .configuration_eurobert import EuroBertConfig\n", "ok.py")
    # Optional backends, as transformers treats them: guarded imports need not be installed.
    check_self_contained("try:\n    import flash_attn\nexcept ImportError:\n    pass\n", "ok.py")
    check_self_contained("if is_flash_attn_2_available():\n    from flash_attn import f\n", "ok.py")
    with pytest.raises(ValueError, match="numpy"):
        check_self_contained("if is_flash_attn_2_available():\n    pass\nelse:\n    import numpy\n", "bad.py")
    for source in (
        "import eurobert_hf\n",
        "from eurobert_hf.modeling import x\n",
        "import numpy\n",
        "from .utils import x\n",
    ):
        with pytest.raises(ValueError, match="may only import"):
            check_self_contained(source, "bad.py")


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_loads_without_plugin_with_trust_remote_code(saved_heads, tmp_path):
    root, spec = saved_heads
    report = last_json_line(run_without_plugin(_script("remote", root / "spec.pt"), tmp_path))
    assert set(report) == set(HEADS)
    for name, entry in report.items():
        assert entry["model_module"].startswith("transformers_modules"), (name, entry)
        assert entry["config_module"].startswith("transformers_modules"), (name, entry)
        assert entry["max_abs_diff"] <= 1e-5, (name, entry)
    assert report["EuroBertForSequenceClassification"]["classifier_pooling"] == "mean"


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
@pytest.mark.skipif(not NATIVE_EUROBERT, reason="native EuroBERT needs transformers >= 5.3")
def test_loads_without_plugin_into_native_classes(saved_heads, tmp_path):
    root, spec = saved_heads
    spec_path = _subset_spec(root, spec, NATIVE_HEADS)
    report = last_json_line(run_without_plugin(_script("native", spec_path), tmp_path))
    assert set(report) == set(NATIVE_HEADS)
    for name, entry in report.items():
        assert entry["model_module"].startswith("transformers.models.eurobert"), (name, entry)
        assert entry["max_abs_diff"] <= 1e-5, (name, entry)
    assert report["EuroBertForSequenceClassification"]["classifier_pooling"] == "mean"


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
@pytest.mark.skipif(NATIVE_EUROBERT, reason="transformers >= 5.3 has a native EuroBERT")
def test_old_transformers_without_plugin_asks_for_trust_remote_code(saved_heads, tmp_path):
    root, spec = saved_heads
    script = f"""
    from transformers import AutoModelForMaskedLM
    try:
        AutoModelForMaskedLM.from_pretrained({spec["EuroBertForMaskedLM"]["folder"]!r}, trust_remote_code=False)
    except ValueError as error:
        print("refused:", error)
    """
    assert "trust_remote_code" in run_without_plugin(script, tmp_path)


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_loads_into_plugin_classes_without_trust_remote_code(saved_heads, tmp_path):
    root, spec = saved_heads
    report = last_json_line(run_python("import eurobert_hf\n" + _script("plugin", root / "spec.pt"), tmp_path))
    for name, entry in report.items():
        assert entry["model_module"].startswith("eurobert_hf.modeling"), (name, entry)
        assert entry["max_abs_diff"] <= 1e-5, (name, entry)
