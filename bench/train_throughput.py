"""Training throughput of our loop against a plain Hugging Face `transformers.Trainer`.

What is compared, side by side in one run, on the same machine and thread count:

* ours: `xstilts.jobs.trainer.Trainer.fit()` exactly as `jobs/stages/train.py` drives it
  (`build_task_model`, `TokenizedData.from_dataset`, `TrainConfig.from_hparams`);
* HF: `transformers.Trainer.train()` with `TrainingArguments` holding the same
  hyperparameters (lr, linear warmup/decay, weight decay, clipping, batch size,
  optimizer steps) and HF's defaults otherwise (its default optimizer, a padding
  collator, `dataloader_num_workers=0`); no evaluation, no saving, no progress bar.

Same tiny model (the demo's XLM-R config, encoder from `prepare-model`, fresh head from
`build_task_model` with the same seed), same data (`syn-rate`, tokenized once by the
`prepare-data` stage and read by both), same batch size, same number of optimizer steps.
The metric is non-padding tokens per second of wall time around `fit()` / `train()`:
padding is wasted work, so a loop that pads less is genuinely faster.

Our `ShuffledBatches` groups examples of similar length by default; HF's default sampler
does not, but HF has the same option (`train_sampling_strategy="group_by_length"`). Both
pairings are measured: like for like with grouping (the headline ratio) and without
(ours with `group_by_length=False` against HF's default random sampler), plus ours
against HF's default as a user would run it.

Ours evaluates once at the end of `fit()` (it always does); its dev set here is one
batch, so that costs milliseconds and is included in our time. The project requires
ours >= 0.95x HF.

    python bench/train_throughput.py                     # 1 thread, 300 steps, 3 repeats
    python bench/train_throughput.py --threads 2 --steps 200
"""

from __future__ import annotations

import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Samples, end_line, interleaved, machine_line, ratio_verdict, table, threads_before_torch  # noqa: E402

if __name__ == "__main__":
    threads_before_torch(sys.argv[1:], default=1)

import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xstilts.core.nodes import ModelSection, NodeRecord, PrepareDataConfig, PrepareModelConfig  # noqa: E402
from xstilts.core.spec import Hyperparameters, ModelSpec  # noqa: E402
from xstilts.jobs import data as jdata  # noqa: E402
from xstilts.jobs.device import select_device  # noqa: E402
from xstilts.jobs.modeling import MODEL_SUBDIR, build_task_model, quiet_progress_bars  # noqa: E402
from xstilts.jobs.stages import prepare_data, prepare_model  # noqa: E402
from xstilts.jobs.stages.base import StageContext  # noqa: E402
from xstilts.core.tasks import get_task  # noqa: E402
from xstilts.jobs.trainer import Trainer, TrainConfig, linear_schedule  # noqa: E402

TASK = "syn-rate"
SEED = 1
LOG = logging.getLogger("bench")


@dataclass(frozen=True)
class Run:
    """One timed training run."""

    seconds: float
    """Wall time of fit() / train()."""
    cpu_seconds: float
    """CPU time of this process over the same span: unlike wall time, not inflated when
    other processes (e.g. a test suite) compete for the cores."""
    tokens: int
    """Non-padding tokens trained on."""

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.tokens / self.cpu_seconds


# ----------------------------------------------------------------------------- setup


def prepare(workdir: Path, max_seq_length: int) -> tuple[Path, Path]:
    """The demo's tiny encoder (no MLM pretraining: throughput does not depend on the
    weights) and `syn-rate` tokenized by the prepare-data stage. Returns (model dir, data dir)."""
    demo_model = dict(yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())["model"])
    demo_model["pretrain_steps"] = 0
    # what the launcher's spec defaults and plan fill in for the demo
    model = ModelSection.from_spec(ModelSpec.model_validate(demo_model), ["en", "qaa", "qab", "qac"])
    model_out, data_out = workdir / "model-node", workdir / "data-node"
    for out in (model_out, data_out):
        out.mkdir(parents=True)
    prepare_model.run(StageContext(
        node=NodeRecord("prepare", "model", None, None, None, "model", PrepareModelConfig(model=model, seed=0), {}),
        out_dir=model_out, inputs={}, log=LOG,
    ))
    prepare_data.run(StageContext(
        node=NodeRecord("prepare", "data", TASK, None, None, "data",
                        PrepareDataConfig(task=TASK, max_seq_length=max_seq_length), {}),
        out_dir=data_out, inputs={"model": model_out}, log=LOG,
    ))
    return model_out / MODEL_SUBDIR, data_out / jdata.DATA_SUBDIR


def hparams(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "learning_rate": 2e-3, "batch_size": args.batch_size, "grad_accum_steps": 1, "epochs": 1.0,
        "max_steps": args.steps, "warmup_ratio": 0.1, "max_seq_length": args.max_seq_length,
        "eval_interval": args.steps + 1,  # evaluate only at the end (fit() always does)
        "patience": None, "weight_decay": 0.01, "max_grad_norm": 1.0,
    }


# ----------------------------------------------------------------------------- runs


def run_ours(encoder_dir: Path, data_dir: Path, hp: dict[str, Any], workdir: Path,
             group_by_length: bool = True, foreach_adamw: bool = False) -> Run:
    """Our Trainer as jobs/stages/train.py builds it; returns (seconds of fit(), non-padding tokens).

    `group_by_length=False` and `foreach_adamw=True` swap one part of the built Trainer
    (its batch iterator; its optimizer and schedule) to isolate what that part costs.
    """
    from transformers import AutoTokenizer

    task = get_task(TASK)
    device = select_device()
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    train_data = jdata.TokenizedData.from_dataset(jdata.load_split(data_dir, "train", "en"), tokenizer.pad_token_id)
    dev_full = jdata.TokenizedData.from_dataset(jdata.load_split(data_dir, "dev", "en"), tokenizer.pad_token_id)
    dev_data = jdata.TokenizedData(dev_full.input_ids[: hp["batch_size"]], dev_full.labels[: hp["batch_size"]],
                                   tokenizer.pad_token_id)
    model = build_task_model(encoder_dir, task, SEED)
    config = TrainConfig.from_hparams(Hyperparameters.model_validate(hp), len(train_data), SEED)
    metrics = workdir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    dev_examples = jdata.load_split_examples(data_dir, "dev", "en")[: hp["batch_size"]]
    trainer = Trainer(model, task, train_data, dev_data, config, device, metrics, LOG, dev_examples=dev_examples)
    if not group_by_length:
        trainer.batches = jdata.ShuffledBatches(train_data, config.batch_size, config.seed, group_by_length=False)
    if foreach_adamw:  # the default implementation instead of the fused kernel ours selects
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in trainer.optimizer.param_groups]
        trainer.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(
            trainer.optimizer, linear_schedule(config.warmup_steps, config.total_steps))

    start, cpu_start = time.perf_counter(), time.process_time()
    state = trainer.fit()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert state.step == config.total_steps == hp["max_steps"], (state.step, config.total_steps)

    # the batches fit() consumed, replayed from the same seed (no counting inside the timed loop)
    twin = jdata.ShuffledBatches(train_data, config.batch_size, config.seed, group_by_length=group_by_length)
    tokens = sum(int(twin.next().attention_mask.sum()) for _ in range(config.total_steps * config.grad_accum_steps))
    assert twin.state_dict() == trainer.batches.state_dict(), "token replay diverged from the trainer's batches"
    return Run(seconds, cpu, tokens)


def run_hf(encoder_dir: Path, data_dir: Path, hp: dict[str, Any], workdir: Path,
           sampling: str = "random", optim: str | None = None) -> Run:
    """transformers.Trainer on the same model/data/hyperparameters; returns (seconds of train(), tokens)."""
    from transformers import AutoTokenizer, DataCollatorWithPadding, PrinterCallback, TrainingArguments
    from transformers import Trainer as HFTrainer

    task = get_task(TASK)
    select_device()  # same thread setting as ours
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    train_set = jdata.load_split(data_dir, "train", "en").select_columns(["input_ids", "labels"])
    model = build_task_model(encoder_dir, task, SEED)
    warmup = TrainConfig.from_hparams(Hyperparameters.model_validate(hp), len(train_set), SEED).warmup_steps
    extra = {"optim": optim} if optim else {}
    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=hp["grad_accum_steps"],
        max_steps=hp["max_steps"],
        learning_rate=hp["learning_rate"],
        weight_decay=hp["weight_decay"],
        max_grad_norm=hp["max_grad_norm"],
        warmup_steps=warmup,
        lr_scheduler_type="linear",
        train_sampling_strategy=sampling,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=hp["eval_interval"],  # ours writes a train line at every evaluation
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=SEED,
        include_num_input_tokens_seen="non_padding",
        **extra,
    )
    trainer = HFTrainer(model=model, args=args, train_dataset=train_set,
                        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # it prints the log dicts when tqdm is off
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert trainer.state.global_step == hp["max_steps"], trainer.state.global_step
    return Run(seconds, cpu, int(trainer.state.num_input_tokens_seen))


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds (median reported)")
    parser.add_argument("--profile", choices=("ours", "hf"), default=None,
                        help="instead of the comparison, cProfile one run of that loop and print the top entries")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # also when main() is called with argv
    quiet_progress_bars()
    logging.getLogger("transformers").setLevel(logging.ERROR)

    import transformers

    workdir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        encoder_dir, data_dir = prepare(workdir, args.max_seq_length)
        hp = hparams(args)
        print(machine_line(f"{args.threads} thread(s), transformers {transformers.__version__}"))
        print("rounds rotate the order of the variants; min-max is over rounds")
        print(f"task {TASK}, demo tiny XLM-R, batch {args.batch_size}, {args.steps} optimizer steps, "
              f"median of {args.repeats}", flush=True)

        variants: dict[str, Callable[[], Run]] = {
            "ours (length-grouped batches, default)": lambda: run_ours(encoder_dir, data_dir, hp, workdir),
            "HF Trainer, group_by_length": lambda: run_hf(encoder_dir, data_dir, hp, workdir, "group_by_length"),
            "ours, group_by_length=False": lambda: run_ours(encoder_dir, data_dir, hp, workdir, False),
            "HF Trainer, default (random sampler)": lambda: run_hf(encoder_dir, data_dir, hp, workdir),
            "HF Trainer, group_by_length, optim=adamw_torch": lambda: run_hf(
                encoder_dir, data_dir, hp, workdir, "group_by_length", "adamw_torch"),
            "ours, foreach AdamW (diagnostic)": lambda: run_ours(encoder_dir, data_dir, hp, workdir, foreach_adamw=True),
        }
        if args.profile:
            profile(variants, args.profile)
            return

        warm = {**hp, "max_steps": 20}  # imports, allocator, first-call costs
        run_ours(encoder_dir, data_dir, warm, workdir)
        run_hf(encoder_dir, data_dir, warm, workdir)

        samples = interleaved(variants, args.repeats, warmup=False)  # the short warm-up above is enough
        assert torch.get_num_threads() == args.threads, torch.get_num_threads()
        report(samples)
        print(f"{end_line()} (other processes on the machine inflate wall time)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(samples: dict[str, list[Run]]) -> None:
    wall = {name: Samples([r.rate for r in runs]) for name, runs in samples.items()}
    cpu = {name: Samples([r.cpu_rate for r in runs]) for name, runs in samples.items()}
    print()
    print(table(["loop", "seconds", "tokens", "tokens/s [min-max]", "tokens/cpu-s"], [
        [name, f"{Samples([r.seconds for r in runs]).median:.2f}", str(runs[0].tokens), wall[name].fmt(0),
         f"{cpu[name].median:.0f}"] for name, runs in samples.items()]))
    ours, hf_grouped, ours_plain, hf_default, hf_adamw, ours_foreach = list(samples)
    print()
    print(table(["ratio (medians)", "wall", "cpu"], [
        [title, ratio_verdict(wall[a], wall[b]), ratio_verdict(cpu[a], cpu[b])] for title, a, b in [
            ("ours / HF, both length-grouped (required >= 0.95)", ours, hf_grouped),
            ("ours / HF, neither length-grouped", ours_plain, hf_default),
            ("ours (default) / HF (default)", ours, hf_default),
            ("ours / HF adamw_torch (both foreach)", ours_foreach, hf_adamw),
            ("HF fused AdamW / HF adamw_torch", hf_grouped, hf_adamw),
            ("ours fused (default) / ours foreach", ours, ours_foreach),
        ]]))


def profile(variants: dict[str, Callable[[], Run]], which: str) -> None:
    import cProfile
    import pstats

    name = next(n for n in variants if n.lower().startswith(which.lower()))
    profiler = cProfile.Profile()
    profiler.enable()
    run = variants[name]()
    profiler.disable()
    print(f"{name}: {run.seconds:.2f} s, {run.rate:.0f} tokens/s (under cProfile)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
