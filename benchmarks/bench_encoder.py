"""Speed and memory of the plugin's EuroBERT against transformers' native EuroBERT, measured in the same run.

Both models get the same random weights (EuroBERT-210m shape unless `--layers` says otherwise) and run
(a) a variable-length batch of 16 sequences with lengths uniform in [16, 512) (fixed seed), right-padded, and
(b) a batch of 16 x 512 tokens with no padding, forward and forward+backward. Every measurement runs in a fresh
subprocess. Printed: real tokens/s, the peak memory of one step (the bytes of the tensors it holds at once, above
the idle model and its inputs: `torch.cuda.max_memory_allocated` on CUDA, the profiler's memory events on CPU),
our/native ratios, and a summary as the last line.

    python benchmarks/bench_encoder.py                      # CPU, fp32 and bf16 autocast, 2 threads
    python benchmarks/bench_encoder.py --device cuda        # GPU, bf16: sdpa and the fastest varlen path
    python benchmarks/bench_encoder.py --quick              # 2 layers, 1 repeat: a smoke run

Needs transformers >= 5.3 (the native EuroBERT is the reference).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 16
MAX_LEN = 512
MIN_LEN = 16


def build_inputs(case: str, vocab_size: int, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (BATCH, MAX_LEN), generator=generator)
    if case == "varlen":
        lengths = torch.randint(MIN_LEN, MAX_LEN, (BATCH,), generator=generator)
    else:
        lengths = torch.full((BATCH,), MAX_LEN)
    attention_mask = (torch.arange(MAX_LEN)[None, :] < lengths[:, None]).long()
    if case == "varlen":
        # Pad to the longest sequence of the batch, as a tokenizer with padding=True does.
        width = int(lengths.max())
        input_ids, attention_mask = input_ids[:, :width], attention_mask[:, :width]
    return input_ids, attention_mask


def peak_step_memory(step, device: str) -> int:
    """Peak bytes of the tensors that one call of `step` holds at once, above what was allocated before it."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        return torch.cuda.max_memory_allocated() - baseline
    # torch's CPU allocator keeps no peak statistics, and the process's resident set size cannot stand in for them:
    # glibc keeps the pages of freed tensors, so after a warm-up step the high-water mark hardly moves (it printed
    # zero and negative peaks). The profiler reports, at every CPU allocation and free, the bytes allocated since it
    # started: their maximum is the step's own peak.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    with tempfile.TemporaryDirectory() as folder:
        trace_path = os.path.join(folder, "trace.json")
        profiler.export_chrome_trace(trace_path)
        with open(trace_path) as handle:
            events = json.load(handle)["traceEvents"]
    allocated = [event["args"]["Total Allocated"] for event in events if event.get("name") == "[memory]"]
    if not allocated:
        raise RuntimeError("the profiler recorded no CPU memory event: cannot measure the peak memory")
    return max(allocated)


def measure(spec: dict) -> dict:
    """Runs in a subprocess: builds one model, times one (case, mode), returns numbers."""
    import torch
    from transformers.models.eurobert import EuroBertConfig as NativeConfig
    from transformers.models.eurobert import EuroBertModel as NativeModel

    from eurobert_hf import EuroBertConfig, EuroBertModel

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    shape = dict(
        vocab_size=128256,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=spec["layers"],
        num_attention_heads=12,
        num_key_value_heads=12,
        head_dim=64,
    )
    torch.manual_seed(0)
    if spec["impl"] == "native":
        config = NativeConfig(**shape, rope_parameters={"rope_type": "default", "rope_theta": 250000.0})
        config._attn_implementation = spec["attn"]
        model = NativeModel(config)
    else:
        model = EuroBertModel(EuroBertConfig(**shape, attn_implementation=spec["attn"]))
    model.to(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["precision"]]
    if device == "cuda":
        model.to(dtype)
    input_ids, attention_mask = (t.to(device) for t in build_inputs(spec["case"], shape["vocab_size"]))
    real_tokens = int(attention_mask.sum())
    backward = spec["mode"] == "fwd+bwd"
    model.train(backward)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=(spec["precision"] == "bf16"))

    def step():
        with torch.set_grad_enabled(backward), autocast:
            hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if backward:
                (hidden.float() * attention_mask[..., None]).square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (allocator, kernels)
    model.zero_grad(set_to_none=True)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    # Measured on a step of its own: profiling would slow the timed ones.
    peak = peak_step_memory(step, device)
    best = min(times)
    return {"seconds": best, "tokens_per_s": real_tokens / best, "peak_mib": peak / 2**20, "real_tokens": real_tokens}


def run_in_subprocess(spec: dict) -> dict:
    repo_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precisions", default=None, help="comma-separated: fp32,bf16 (default: CPU both, GPU bf16)")
    parser.add_argument("--ours-attn", default=None, help="comma-separated attention backends for the plugin")
    parser.add_argument("--quick", action="store_true", help="2 layers, 1 repeat")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    if args.quick:
        args.layers, args.repeats = 2, 1
    precisions = (args.precisions or ("fp32,bf16" if args.device == "cpu" else "bf16")).split(",")
    ours_attn = (args.ours_attn or ("sdpa" if args.device == "cpu" else "sdpa,flash_attention_2")).split(",")

    import torch

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"# EuroBERT encoder benchmark: {args.layers} layers, batch {BATCH}, device {device_name}, torch {torch.__version__}"
    )
    header = f"{'precision':9} {'case':7} {'mode':8} {'model':24} {'tok/s':>9} {'ms':>9} {'peak MiB':>9} {'speed':>6} {'mem':>6}"
    print(header)
    summary = []
    for precision in precisions:
        for case in ("varlen", "full"):
            for mode in ("fwd", "fwd+bwd"):
                common = dict(
                    device=args.device,
                    threads=args.threads,
                    layers=args.layers,
                    repeats=args.repeats,
                    precision=precision,
                    case=case,
                    mode=mode,
                )
                native = run_in_subprocess({**common, "impl": "native", "attn": "sdpa"})
                rows = [("native sdpa", native)]
                for attn in ours_attn:
                    try:
                        rows.append(
                            (f"eurobert_hf {attn}", run_in_subprocess({**common, "impl": "ours", "attn": attn}))
                        )
                    except RuntimeError as error:
                        print(f"# skipped eurobert_hf {attn}: {str(error).splitlines()[-1]}")
                for name, result in rows:
                    speed = result["tokens_per_s"] / native["tokens_per_s"]
                    memory = result["peak_mib"] / max(native["peak_mib"], 1e-9)
                    print(
                        f"{precision:9} {case:7} {mode:8} {name:24} {result['tokens_per_s']:9.0f} "
                        f"{result['seconds'] * 1e3:9.1f} {result['peak_mib']:9.0f} {speed:5.2f}x {memory:5.2f}x"
                    )
                    if name != "native sdpa":
                        summary.append(
                            f"{precision}/{case}/{mode}/{name.split()[-1]} {speed:.2f}x speed {memory:.2f}x mem"
                        )
    print("SUMMARY (ours/native): " + "; ".join(summary))


if __name__ == "__main__":
    main()
