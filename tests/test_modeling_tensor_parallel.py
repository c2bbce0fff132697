"""Tensor parallelism: `from_pretrained(..., tp_plan="auto")` over 2 CPU processes (gloo) gives the single-process
outputs, for the padded (padding-free) path and for a packed row.

The same file is the worker script: run as `__main__` under torchrun, it loads the saved model sharded and writes
rank 0's outputs to a file.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_outputs(model, inputs: dict) -> dict:
    with torch.no_grad():
        padded = model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        packed = model(inputs["packed_ids"], position_ids=inputs["packed_positions"]).logits
    return {"padded": padded, "packed": packed}


def run_sharded(model_dir: str, inputs_file: str, outputs_file: str) -> None:
    from eurobert_hf import EuroBertForMaskedLM

    model = EuroBertForMaskedLM.from_pretrained(model_dir, tp_plan="auto").eval()
    query_weight = model.model.layers[0].self_attn.q_proj.weight
    assert query_weight.to_local().shape[0] == query_weight.shape[0] // 2, "each process holds half the heads"
    outputs = model_outputs(model, torch.load(inputs_file))
    if int(os.environ["RANK"]) == 0:
        torch.save({key: value.contiguous() for key, value in outputs.items()}, outputs_file)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_tensor_parallel_outputs_equal_one_process(tmp_path):
    from eurobert_hf import EuroBertForMaskedLM
    from tests.eurobert_fixtures import padded_batch, tiny_config

    torch.manual_seed(0)
    model = EuroBertForMaskedLM(tiny_config("gqa")).eval()
    model.save_pretrained(tmp_path / "model")
    input_ids, attention_mask = padded_batch()
    lengths = attention_mask.sum(-1).tolist()
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "packed_ids": torch.cat([input_ids[i, :n] for i, n in enumerate(lengths)])[None],
        "packed_positions": torch.cat([torch.arange(n) for n in lengths])[None],
    }
    torch.save(inputs, tmp_path / "inputs.pt")
    expected = model_outputs(model, inputs)

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",  # as a module: run as a file, tests/ would shadow installed packages (tests/tokenizers.py)
        "tests.test_modeling_tensor_parallel",
        str(tmp_path / "model"),
        str(tmp_path / "inputs.pt"),
        str(tmp_path / "outputs.pt"),
    ]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-8000:]
    sharded = torch.load(tmp_path / "outputs.pt")
    for key, value in expected.items():
        torch.testing.assert_close(sharded[key], value, atol=1e-5, rtol=1e-5)


if __name__ == "__main__":
    run_sharded(*sys.argv[1:4])
