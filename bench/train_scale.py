"""Training at real model sizes: our loop against Hugging Face `Trainer`, with FLOP/s and
the fraction of this machine's measured matmul peak.

What is compared, side by side, interleaved with the yardstick in rotated rounds (ours, HF,
peak; HF, peak, ours; peak, ours, HF; ...) and repeated, each run in a fresh child process
(so peak memory is that run's, and no run inherits another's allocator or caches):

* ours: `xstilts.jobs.trainer.Trainer.fit()` as the train stage builds it, with the
  device speed-ups `jobs.acceleration` selects (on CPU: fp32, SDPA, fused AdamW, no compile;
  on CUDA also bf16 autocast and compiled layers);
* HF: `transformers.Trainer.train()` with the same model (same config and seed), the same
  data, the same optimizer (fused AdamW with decay on matrices only: `adamw_torch_fused`,
  HF's default and ours), the same precision (fp32 on CPU; bf16 on CUDA),
  linear warmup and decay, gradient clipping, batch size and step count; no evaluation,
  saving or logging inside the run.

Data: random token ids, every sequence exactly `--seq-len` long (no padding), 3-way labels.
Fixed length makes both sides do identical work per step, so tokens/s and FLOP/s compare
the loops, not their batching (padding and length grouping are compared on real-shaped
data by `bench/train_throughput.py`).

Sizes: `demo` (the demo's tiny XLM-R: 2 layers, 64 wide, vocabulary 1,000), `base`
(XLM-R base dimensions, 250,002-token vocabulary, random init: 278M parameters), `large`
(XLM-R large: 560M). Timing: the wall time from the end of optimizer step `--warmup-steps`
to the end of the last step (each side stamps its steps: ours by wrapping
`Trainer.step`, HF by a `TrainerCallback.on_step_end`), so model building, the first
steps (allocator growth, lazy init) and ours' final evaluation are outside it.

FLOPs of one optimizer step are counted once per size with `torch.utils.flop_counter`
(forward + backward of one batch; matmuls and attention, which is what the peak measures);
achieved FLOP/s = FLOPs per step x steps / time. The yardstick is measured in the parent,
between runs, with the same thread count: the best-shaped fp32 (CPU) or bf16 (CUDA)
matmul this machine does (`--peak-n` square), several times per round, so its own noise is
printed beside it. On CUDA the fraction is also given against the device's nominal bf16
peak (`--nominal-tflops`), the usual MFU.

    python bench/train_scale.py --sizes demo,base                 # CPU, all cores
    python bench/train_scale.py --sizes base --profile ours        # where ours' step time goes
    python bench/train_scale.py --device cuda --sizes large --seq-len 384 --nominal-tflops 989 --checkpoint

`--checkpoint`: after ours' run, time a `dcp.save` of its model and optimizer state to a
fresh local folder against a raw fsynced write of the same number of bytes (the disk's
write rate), three times each, interleaved.
"""

from __future__ import annotations

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    Samples, dir_bytes, end_line, interleaved, machine_line, paired_ratios, ratio_verdict, raw_write, run_timed, table,
    threads_before_torch,
)

if __name__ == "__main__":
    threads_before_torch(sys.argv[1:], default=os.cpu_count() or 1)

import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES: dict[str, dict[str, int]] = {
    "demo": {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128},
    "base": {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072},
    "large": {"vocab_size": 250002, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096},
}
NUM_LABELS = 3
SEED = 1
LEARNING_RATE = 2e-5
LOG = logging.getLogger("bench.train_scale")


@dataclass(frozen=True)
class Setting:
    """One measured configuration, handed to a child process as JSON."""

    side: str
    size: str
    device: str
    steps: int
    warmup_steps: int
    batch_size: int
    seq_len: int
    checkpoint: bool = False


@dataclass(frozen=True)
class RunResult:
    """What a child reports about one run."""

    tokens: int
    timed_steps: int
    seconds: float
    cpu_seconds: float
    peak_memory_mb: float
    parameters: int
    flops_per_step: float


# ----------------------------------------------------------------------------- the shared pieces


def model_config(size: str, seq_len: int) -> Any:
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(**SIZES[size], num_labels=NUM_LABELS, max_position_embeddings=max(514, seq_len + 2),
                            type_vocab_size=1)


def build_model(size: str, seq_len: int) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    return AutoModelForSequenceClassification.from_config(model_config(size, seq_len))


def token_rows(setting: Setting) -> tuple[list[list[int]], list[int]]:
    """`batch x (steps + 1)` sequences of exactly `seq_len` tokens (<s> ... </s>), seeded."""
    vocab = SIZES[setting.size]["vocab_size"]
    generator = torch.Generator().manual_seed(SEED)
    count = setting.batch_size * (setting.steps + 1)
    body = torch.randint(5, vocab, (count, setting.seq_len - 2), generator=generator)
    rows = torch.cat([torch.zeros(count, 1, dtype=torch.long), body, torch.full((count, 1), 2)], dim=1)
    labels = torch.randint(0, NUM_LABELS, (count,), generator=generator)
    return rows.tolist(), labels.tolist()


def warmup_steps_of(setting: Setting) -> int:
    """The learning-rate warmup (10% of the run), the same on both sides."""
    return max(1, setting.steps // 10)


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def count_step_flops(model: torch.nn.Module, setting: Setting, device: torch.device) -> float:
    """FLOPs of forward + backward of one batch, counted by torch's flop counter; leaves no gradients."""
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.randint(5, SIZES[setting.size]["vocab_size"], (setting.batch_size, setting.seq_len), device=device)
    labels = torch.zeros(setting.batch_size, dtype=torch.long, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with FlopCounterMode(display=False) as counter, autocast:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def stamp(stamps: list[tuple[float, float]], cuda: bool) -> None:
    """Wall and CPU time at the end of an optimizer step (after the GPU finished it)."""
    if cuda:
        torch.cuda.synchronize()
    stamps.append((time.perf_counter(), time.process_time()))


def steady(stamps: list[tuple[float, float]], setting: Setting, flops: float, memory: float,
           parameters: int) -> RunResult:
    """The run from the end of warm-up step `warmup_steps` to the end of the last step."""
    assert len(stamps) == setting.steps, (len(stamps), setting.steps)
    timed_steps = setting.steps - setting.warmup_steps
    start, end = stamps[setting.warmup_steps - 1], stamps[-1]
    return RunResult(
        tokens=timed_steps * setting.batch_size * setting.seq_len, timed_steps=timed_steps,
        seconds=end[0] - start[0], cpu_seconds=end[1] - start[1], peak_memory_mb=memory, parameters=parameters,
        flops_per_step=flops)


# ----------------------------------------------------------------------------- the two sides (child processes)


def run_ours(setting: Setting, workdir: Path, profile: bool = False) -> RunResult:
    from xstilts.core.spec import Hyperparameters
    from xstilts.core.tasks import get_task
    from xstilts.jobs.data import TokenizedData
    from xstilts.jobs.device import select_device
    from xstilts.jobs.trainer import Trainer, TrainConfig

    device = select_device()
    rows, labels = token_rows(setting)
    train = TokenizedData(rows, labels, pad_id=1)
    dev = TokenizedData(rows[: setting.batch_size], labels[: setting.batch_size], pad_id=1)
    task = get_task("syn-rate")
    gold = [{"label": task.labels[label]} for label in labels[: setting.batch_size]]
    model = build_model(setting.size, setting.seq_len)
    flops = count_step_flops(model.to(device.device), setting, device.device)
    hparams = Hyperparameters(learning_rate=LEARNING_RATE, batch_size=setting.batch_size, max_steps=setting.steps,
                              warmup_ratio=warmup_steps_of(setting) / setting.steps, eval_interval=setting.steps + 1,
                              max_seq_length=max(setting.seq_len, 9))
    config = TrainConfig.from_hparams(hparams, len(train), SEED)
    stamps: list[tuple[float, float]] = []

    class Stamped(Trainer):
        def step(self) -> float:
            loss = super().step()
            stamp(stamps, device.is_cuda)
            return loss

    trainer = Stamped(model, task, train, dev, config, device, workdir / "metrics.jsonl", LOG, dev_examples=gold)
    if profile:
        profile_steps(trainer, setting)
        return RunResult(0, 0, 1.0, 1.0, 0.0, 0, flops)
    trainer.fit()
    result = steady(stamps, setting, flops, peak_memory_mb(setting.device), sum(p.numel() for p in model.parameters()))
    if setting.checkpoint:
        time_checkpoint(trainer, workdir)
    return result


def time_checkpoint(trainer: Any, workdir: Path, repeats: int = 3) -> None:
    """dcp.save of the trainer's model + optimizer against a raw fsynced write of as many bytes."""
    import shutil

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(trainer.model, trainer.optimizer)
    state = {"model": model_state, "optim": optim_state}
    saves, writes = Samples(), Samples()
    size, payload = 0, memoryview(b"")
    for index in range(repeats):
        target = workdir / f"dcp-{index}"
        started = time.perf_counter()
        dcp.save(state, checkpoint_id=str(target))
        saves.add(time.perf_counter() - started)
        size = dir_bytes(target)
        shutil.rmtree(target)
        if len(payload) != size:  # non-repeating, like trained weights: nothing can deduplicate or compress it
            payload = memoryview(os.urandom(size))
        started = time.perf_counter()
        raw_write(workdir / "raw", payload)
        writes.add(time.perf_counter() - started)
        (workdir / "raw").unlink()
    # the ratio only: 3 pairs are too few for a sign test (bench/checkpoint.py makes that claim, with 7)
    ratios = paired_ratios(saves.values, writes.values)
    print(f"checkpoint: {size / 1e6:.0f} MB; dcp.save {saves.fmt(2, ' s')} ({size / 1e6 / saves.median:.0f} MB/s); "
          f"raw fsynced write {writes.fmt(2, ' s')} ({size / 1e6 / writes.median:.0f} MB/s); "
          f"dcp/raw time {ratios.fmt(2, 'x')} (paired per repeat); raw write spread {writes.spread:.0%}", flush=True)


def profile_steps(trainer: Any, setting: Setting) -> None:
    """torch.profiler over ours' steps after warm-up: the operators the time goes to."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(setting.warmup_steps):
        trainer.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setting.device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(setting.steps - setting.warmup_steps):
            trainer.step()
    sort = "self_cuda_time_total" if setting.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25))


def run_hf(setting: Setting, workdir: Path) -> RunResult:
    from datasets import Dataset
    from transformers import Trainer as HFTrainer
    from transformers import TrainerCallback, TrainingArguments, default_data_collator

    from xstilts.jobs.device import select_device

    select_device()  # the same threads and GPU choice as ours
    cuda = setting.device == "cuda"
    rows, labels = token_rows(setting)
    train = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * setting.seq_len] * len(rows),
                               "labels": labels})
    train.set_format("torch")  # rows come out as tensors: the collator only stacks them
    model = build_model(setting.size, setting.seq_len)
    stamps: list[tuple[float, float]] = []

    class Stamps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamp(stamps, cuda)

    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=setting.batch_size,
        max_steps=setting.steps,
        learning_rate=LEARNING_RATE,
        weight_decay=0.01,
        max_grad_norm=1.0,
        warmup_steps=warmup_steps_of(setting),
        lr_scheduler_type="linear",
        optim="adamw_torch_fused",  # what ours selects on both devices, and HF's own default
        bf16=cuda,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=setting.steps + 1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        seed=SEED,
    )
    trainer = HFTrainer(model=model, args=args, train_dataset=train, data_collator=default_data_collator,
                        callbacks=[Stamps()])
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return steady(stamps, setting, 0.0, peak_memory_mb(setting.device), sum(p.numel() for p in model.parameters()))


def child(setting_json: str, out: str, profile: bool) -> None:
    setting = Setting(**json.loads(setting_json))
    if setting.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="bench-train-scale-") as tmp:
        run = (run_ours(setting, Path(tmp), profile) if setting.side == "ours" else run_hf(setting, Path(tmp)))
    Path(out).write_text(json.dumps(asdict(run)))


# ----------------------------------------------------------------------------- the parent


def in_child(setting: Setting, threads: int, profile: bool = False) -> RunResult:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    command = [sys.executable, __file__, "--threads", str(threads), "--child", json.dumps(asdict(setting)), out]
    if profile:
        command.append("--profile-child")
    done = run_timed(command, label=f"{setting.side} {setting.size}", env=env)
    if profile:  # the profiler's table, printed when the child ends
        print(done.stdout, end="", flush=True)
    for line in done.stdout.splitlines():
        if line.startswith("checkpoint:"):
            print(f"  {line}", flush=True)
    result = RunResult(**json.loads(Path(out).read_text()))
    Path(out).unlink()
    return result


def matmul_rate(device: str, n: int, min_seconds: float = 0.5) -> float:
    """FLOP/s of n x n x n matmuls (fp32 on CPU, bf16 on CUDA) repeated for at least
    `min_seconds`, after one warm-up."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    if device == "cuda":
        torch.cuda.synchronize()
    started, repeats = time.perf_counter(), 0
    while True:
        torch.mm(a, b, out=out)
        repeats += 1
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return 2.0 * n**3 * repeats / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="demo,base", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per run (default: by size)")
    parser.add_argument("--warmup-steps", type=int, default=0, help="untimed first steps (default: by size)")
    parser.add_argument("--batch-size", type=int, default=0, help="default: by size")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds per size (median reported)")
    parser.add_argument("--peak-n", type=int, default=0, help="matmul size of the yardstick (default 2048 CPU, 8192 CUDA)")
    parser.add_argument("--nominal-tflops", type=float, default=0.0,
                        help="CUDA: the device's dense bf16 peak from its data sheet (H100/H200 SXM: 989)")
    parser.add_argument("--checkpoint", action="store_true", help="time DCP saves of ours' state (see above)")
    parser.add_argument("--profile", choices=("ours",), help="profile ours' steps instead of timing the sides")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.profile_child)
        return

    import transformers

    print(machine_line(f"{args.threads} thread(s), transformers {transformers.__version__}, device {args.device}"
                       + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")), flush=True)
    torch.set_num_threads(args.threads)
    peak_n = args.peak_n or (8192 if args.device == "cuda" else 2048)
    for size in args.sizes.split(","):
        if size not in SIZES:
            raise SystemExit(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
        defaults = {"demo": (300, 20, 32), "base": (24, 4, 16), "large": (24, 4, 16)}[size]
        steps, warmup, batch = args.steps or defaults[0], args.warmup_steps or defaults[1], args.batch_size or defaults[2]
        if warmup >= steps:
            raise SystemExit(f"--warmup-steps {warmup} must be below --steps {steps}")
        settings = {side: Setting(side, size, args.device, steps, warmup, batch, args.seq_len,
                                  checkpoint=args.checkpoint and side == "ours") for side in ("ours", "hf")}
        print(f"\n{size}: {steps} steps of {batch} x {args.seq_len} tokens, the last {steps - warmup} timed", flush=True)
        if args.profile:
            in_child(settings["ours"], args.threads, profile=True)
            continue

        def peak_rates() -> list[float]:
            return [matmul_rate(args.device, peak_n) for _ in range(5)]

        before = peak_rates()  # and 5 more in each round
        measured = interleaved({"ours": lambda: in_child(settings["ours"], args.threads),
                                "hf": lambda: in_child(settings["hf"], args.threads), "peak": peak_rates},
                               args.repeats, warmup=False)
        peak = Samples(before + [rate for rates in measured.pop("peak") for rate in rates])
        report(size, measured, peak, peak_n, args)
    print(f"\n{end_line()}")


def report(size: str, runs: dict[str, list[RunResult]], peak: Samples, peak_n: int, args: argparse.Namespace) -> None:
    flops_per_step = runs["ours"][0].flops_per_step
    rows = []
    rates: dict[str, Samples] = {}
    for side, results in runs.items():
        tokens_per_s = Samples([r.tokens / r.seconds for r in results])
        rates[side] = tokens_per_s
        achieved = Samples([flops_per_step * r.timed_steps / r.seconds for r in results])
        fraction = Samples([a / peak.median for a in achieved.values])
        cpu_rate = Samples([r.tokens / r.cpu_seconds for r in results]) if args.device == "cpu" else None
        rows.append([
            "ours (jobs.trainer)" if side == "ours" else "HF Trainer",
            tokens_per_s.fmt(0),
            achieved.fmt(1, scale=1e-9),
            fraction.fmt(2),
            f"{max(r.peak_memory_mb for r in results):.0f}",
            cpu_rate.fmt(0) if cpu_rate else "-",
        ])
    params = runs["ours"][0].parameters
    print(f"\n{size}: {params / 1e6:.1f}M parameters; {flops_per_step / 1e12:.3f} TFLOP per step "
          f"(forward + backward, torch.utils.flop_counter); median [min-max] of {args.repeats}")
    print(f"yardstick: {peak_n}^3 {'bf16' if args.device == 'cuda' else 'fp32'} matmul, {args.threads} thread(s): "
          f"{peak.fmt(1, ' GFLOP/s', 1e-9)}, "
          f"its spread {peak.spread:.0%} over {len(peak.values)} samples")
    print(table(["loop", "tokens/s", "GFLOP/s", "of matmul peak", "peak MB", "tokens/cpu-s"], rows))
    print(f"ours / HF tokens/s: {ratio_verdict(rates['ours'], rates['hf'])}")
    if args.nominal_tflops:
        for side, results in runs.items():
            mfu = Samples([flops_per_step * r.timed_steps / r.seconds / (args.nominal_tflops * 1e12) for r in results])
            print(f"{side} MFU against the nominal {args.nominal_tflops:.0f} TFLOP/s: {mfu.fmt(3)}")


if __name__ == "__main__":
    main()
