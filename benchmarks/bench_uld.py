"""Speed and peak memory of `eurobert_hf.uld_loss` against a straightforward ULD reference (forward + backward).

The reference is the paper's algorithm as usually written: softmax over every position, full `torch.sort` of the
aligned rows, zero-padding, L1, a Python loop over samples. Each method runs in a fresh subprocess so that its peak
memory (resident set high-water mark above the inputs, which captures torch's CPU allocations) is its own.

    python benchmarks/bench_uld.py            # issue shape: B=8, 256 answer tokens, V_S=49152, V_T=128256, 2 threads
    python benchmarks/bench_uld.py --quick    # small shape, a few seconds

Targets (issue 3): >= 3x faster, >= 4x less peak memory, same value within 1e-5 relative.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_inputs(args: argparse.Namespace):
    import torch

    generator = torch.Generator().manual_seed(0)
    batch, answer = args.batch_size, args.answer_tokens
    student_prompt, teacher_prompt = 24, 40
    student_logits = 2.0 * torch.randn(batch, student_prompt + answer, args.student_vocab, generator=generator)
    teacher_logits = 3.0 * torch.randn(batch, teacher_prompt + answer, args.teacher_vocab, generator=generator)
    student_labels = torch.full(student_logits.shape[:2], -100, dtype=torch.long)
    teacher_labels = torch.full(teacher_logits.shape[:2], -100, dtype=torch.long)
    student_labels[:, student_prompt:] = torch.randint(args.student_vocab, (batch, answer), generator=generator)
    teacher_labels[:, teacher_prompt:] = torch.randint(args.teacher_vocab, (batch, answer), generator=generator)
    return student_logits.requires_grad_(), teacher_logits, student_labels, teacher_labels


def reference_uld(student_logits, teacher_logits, student_labels, teacher_labels):
    """The paper's ULD term, written the straightforward way."""
    import torch
    import torch.nn.functional as F

    student_probs = torch.softmax(student_logits, dim=-1)
    with torch.no_grad():
        teacher_probs = torch.softmax(teacher_logits, dim=-1)
    vocab = max(student_probs.shape[-1], teacher_probs.shape[-1])
    per_sample = []
    for b in range(student_logits.shape[0]):
        student_positions = (student_labels[b, 1:] != -100).nonzero().squeeze(-1)
        teacher_positions = (teacher_labels[b, 1:] != -100).nonzero().squeeze(-1)
        n = min(len(student_positions), len(teacher_positions))
        if n == 0:
            continue
        s = student_probs[b, student_positions[:n]].sort(dim=-1, descending=True).values
        t = teacher_probs[b, teacher_positions[:n]].sort(dim=-1, descending=True).values
        s = F.pad(s, (0, vocab - s.shape[-1]))
        t = F.pad(t, (0, vocab - t.shape[-1]))
        per_sample.append((s - t).abs().sum(dim=-1).mean())
    return torch.stack(per_sample).mean()


class PeakRSS:
    """Resident set high-water mark in bytes, reset at start (Linux clear_refs; else sampled every millisecond)."""

    def __init__(self):
        self._sampled = 0
        self._stop = threading.Event()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._exact = True
        except OSError:
            self._exact = False
            threading.Thread(target=self._sample, daemon=True).start()

    @staticmethod
    def current() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        import psutil

        return psutil.Process().memory_info().rss

    def _sample(self):
        while not self._stop.is_set():
            self._sampled = max(self._sampled, self.current())
            time.sleep(0.001)

    def peak(self) -> int:
        if self._exact:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        self._stop.set()
        return max(self._sampled, self.current())


def run_method(args: argparse.Namespace) -> dict:
    import gc

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO_ROOT))
    from eurobert_hf.trainers.uld_losses import uld_loss

    student_logits, teacher_logits, student_labels, teacher_labels = make_inputs(args)
    probe = torch.randn(student_logits.shape, generator=torch.Generator().manual_seed(1))
    gc.collect()
    baseline = PeakRSS.current()
    tracker = PeakRSS()
    start = time.perf_counter()
    if args.method == "reference":
        loss = reference_uld(student_logits, teacher_logits, student_labels, teacher_labels)
    else:
        loss = uld_loss(student_logits, teacher_logits, student_labels, teacher_labels, top_k=args.top_k)
    forward_s = time.perf_counter() - start
    loss.backward()
    total_s = time.perf_counter() - start
    peak = tracker.peak()
    grad = student_logits.grad
    return {
        "method": args.method,
        "value": loss.item(),
        "forward_s": forward_s,
        "total_s": total_s,
        "peak_extra_bytes": peak - baseline,
        "grad_norm": grad.norm().item(),
        "grad_probe": (grad.double() * probe.double()).sum().item(),
    }


def launch(method: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", method, *args.forwarded]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{method} run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small shape (B=2, 64 answer tokens, V 8192/32000).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--answer-tokens", type=int, default=256)
    parser.add_argument("--student-vocab", type=int, default=49152)
    parser.add_argument("--teacher-vocab", type=int, default=128256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=None, help="Also pass top_k to uld_loss (approximate).")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of uld_loss (the best is reported).")
    parser.add_argument("--child", choices=["reference", "uld_loss"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.answer_tokens, args.student_vocab, args.teacher_vocab = 2, 64, 8192, 32000
    if args.child is not None:
        args.method = args.child
        print(json.dumps(run_method(args)))
        return
    args.forwarded = [
        f"--batch-size={args.batch_size}",
        f"--answer-tokens={args.answer_tokens}",
        f"--student-vocab={args.student_vocab}",
        f"--teacher-vocab={args.teacher_vocab}",
        f"--threads={args.threads}",
    ] + ([f"--top-k={args.top_k}"] if args.top_k else [])

    print(
        f"ULD forward+backward, fp32 CPU, {args.threads} threads: B={args.batch_size}, {args.answer_tokens} answer "
        f"tokens/sample, V_S={args.student_vocab}, V_T={args.teacher_vocab}"
        + (f", uld_loss top_k={args.top_k}" if args.top_k else "")
    )
    reference = launch("reference", args)
    fast = min((launch("uld_loss", args) for _ in range(args.repeats)), key=lambda r: r["total_s"])
    for r in (reference, fast):
        print(
            f"{r['method']:>10}: value {r['value']:.8f}  time {r['total_s']:.2f} s (forward {r['forward_s']:.2f} s)  "
            f"peak extra memory {r['peak_extra_bytes'] / 2**20:.0f} MiB"
        )
    speedup = reference["total_s"] / fast["total_s"]
    memory_ratio = reference["peak_extra_bytes"] / max(fast["peak_extra_bytes"], 1)
    value_rel = abs(fast["value"] - reference["value"]) / abs(reference["value"])
    grad_rel = abs(fast["grad_probe"] - reference["grad_probe"]) / abs(reference["grad_probe"])
    norm_rel = abs(fast["grad_norm"] - reference["grad_norm"]) / reference["grad_norm"]
    print(f"speed-up {speedup:.2f}x (target >= 3), memory ratio {memory_ratio:.2f}x (target >= 4)")
    print(f"value relative difference {value_rel:.2e} (target <= 1e-5)")
    print(f"gradient relative difference: norm {norm_rel:.2e}, random projection {grad_rel:.2e}")
    met = speedup >= 3 and memory_ratio >= 4 and value_rel <= 1e-5
    print(
        f"SUMMARY speedup={speedup:.2f}x memory={memory_ratio:.2f}x value_rel_diff={value_rel:.1e} "
        f"targets {'MET' if met else 'NOT MET'}"
        + (" (quick shape: the targets are stated for the full shape)" if args.quick else "")
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
