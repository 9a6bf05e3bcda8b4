"""``hyperagents fit``: train an attention predictor of agents' values and test it at unseen L.

Defaults are the paper's setting (arXiv 2506.06179 section 7): N = 360 positions, R = 5, training
worlds of L* = 20 agents, 100k training sequences, one-hot embedding with d = N, single-layer
linear SA with C and W_V initialised N(0, 1), MSE. The target is each agent's return under
MOVE_RIGHT, plus the paper's -1 self term. Test sets at other agent counts measure length
generalisation; ``product_mse`` compares the learned interaction table C_{mu nu} W_nu with the
devised one (Corollary D.5: only that product is identified).

Writes the run folder ``<runs_dir>/<run_name>/`` (see ``training/runs.py``): config.json (the manifest),
metrics.json, TensorBoard events, the last two checkpoints (checksummed; the same command resumes
from them and ends bit-identical to an uninterrupted run; Ctrl-C saves one first) and PNG figures
(learned vs devised C and C.W, the Figure-1 diagonal, test MSE against L, the loss curve).
A rerun may change only ``FIT_MAY_CHANGE``; anything else needs another ``--run-name`` or ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from envs.checks import check_int, check_real
from envs.datasets import Dataset, make_dataset, versatility_report
from envs.genotype import make_genotype_dataset, sample_rules
from policies import devised
from policies.embeddings import make_embedding
from policies.predictor import Predictor, make_attention
from training import dist, runs
from training.runs import Run


@dataclass
class FitConfig:
    """Train a predictor of per-agent values; the defaults reproduce the paper's main experiment."""

    scenario: Literal["pairwise", "alliances", "predator_prey", "genotype"] = "pairwise"
    """what to predict: agents' MOVE_RIGHT returns, a labelled scenario, or genotype phenotypes"""
    grid_size: int = 360
    """N, also the position domain size"""
    radius: int = 5
    """R"""
    train_agents: int = 20
    """L*, the agent count of every training world"""
    train_agents_max: int | None = None
    """if set, training worlds have every count from train_agents to this, in equal shares (padded)"""
    num_train: int = 100_000
    """training sequences"""
    num_test: int = 2_000
    """test sequences per evaluated agent count"""
    eval_agents: tuple[int, ...] = (2, 5, 10, 20, 30, 40)
    """agent counts to test at (any list)"""
    unique_positions: bool = False
    """draw training y without repeats (breaks versatility: the paper's Remark D.3 control)"""
    attention: Literal["sa", "hfa", "ha", "sa+ha"] = "sa"
    """attention family ('sa+ha': a pairwise SA term plus an order-n HA term, summed)"""
    kind: Literal["linear", "softmax"] = "linear"
    """linear (paper Eq. 1) or softmax attention"""
    embedding: Literal["onehot", "onehot_concat", "sinusoidal", "sinusoidal_normalized", "learned"] = "onehot"
    """token embedding; 'sinusoidal' is the paper's p(n) with p.p = N/2, '_normalized' scales it to p.p = 1;
    labelled tokens get the Kronecker product of their columns, or with 'onehot_concat' the concatenation"""
    dim: int | None = None
    """embedding width d (None: the domain size, which makes linear SA exact)"""
    heads: int = 1
    """attention heads H"""
    factors: int = 2
    """HFA factors A"""
    order: int = 3
    """HA order n"""
    rank: int | None = None
    """linear only: C = W_Q W_K^T of rank r per head (and factor); for HA the CP rank d_h (None: full)"""
    mlp_hidden: int | None = None
    """width of a ReLU layer after attention (None: none, the paper's model)"""
    init_std: float = 1.0
    """attention parameters start i.i.d. N(0, init_std^2) (the paper: 1); 0 keeps the module's own init"""
    steps: int = 6000
    """optimisation steps (6k reach test MSE ~1e-15 in the paper's setting)"""
    batch_size: int = 1000
    """sequences per step"""
    learning_rate: float = 0.1
    """Adam learning rate (cosine-decayed to 0)"""
    dtype: Literal["float64", "float32"] = "float64"
    """float64 reaches MSE far below 1e-8"""
    num_alleles: int = 40
    """genotype only: domain size"""
    seed: int = 0
    """seed of data, initialisation and batches"""
    run_name: str | None = None
    """run folder name under runs_dir (default fit_<scenario>_<attention>-<kind>_<embedding>_s<seed>)"""
    runs_dir: str = "runs"
    """parent directory of runs"""
    checkpoint_every: int = 250
    """steps between checkpoints (the last two are kept)"""
    resume: bool = True
    """continue from the run's checkpoint when it exists (False: start again, as --overwrite)"""
    overwrite: bool = False
    """wipe the run folder and start again, whatever it held"""
    figures: bool = True
    """write PNG figures"""
    progress: bool = True
    """show a progress bar"""

    @property
    def name(self) -> str:
        """The run folder's name: run_name, or one derived from the config."""
        derived = f"fit_{self.scenario}_{self.attention}-{self.kind}_{self.embedding}_s{self.seed}"
        return self.run_name or derived


# Settings a rerun may change: more steps, and what is measured or shown after training.
FIT_MAY_CHANGE = (
    "steps",
    "checkpoint_every",
    "resume",
    "overwrite",
    "figures",
    "progress",
    "eval_agents",
    "num_test",
    "run_name",
    "runs_dir",
)
# Fields renamed since runs were first stored (old name -> new): an old run resumes and loads.
FIT_RENAMED = {"name": "run_name", "out_dir": "runs_dir", "lr": "learning_rate"}


def validate(cfg: FitConfig) -> None:
    """Stop at once, with a clear message, on a config that cannot run."""
    runs.validate_name(cfg.name, "run_name")
    if isinstance(cfg.checkpoint_every, bool) or cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every!r}")
    if any(L < 1 for L in cfg.eval_agents) or not cfg.eval_agents:
        raise ValueError(f"eval_agents must be a non-empty list of counts >= 1, got {cfg.eval_agents}")
    if cfg.train_agents < 1:
        raise ValueError(f"train_agents must be >= 1, got {cfg.train_agents}")
    if cfg.train_agents_max is not None and cfg.train_agents_max < cfg.train_agents:
        raise ValueError(
            f"train_agents_max must be >= train_agents={cfg.train_agents}, got {cfg.train_agents_max}"
        )
    if cfg.rank is not None and (cfg.kind != "linear" or cfg.rank < 1):
        raise ValueError(f"rank needs kind='linear' and must be >= 1, got rank={cfg.rank}, kind={cfg.kind!r}")
    if cfg.num_train < 1 or cfg.num_test < 1 or cfg.batch_size < 1 or cfg.steps < 0:
        raise ValueError("num_train, num_test and batch_size must be >= 1 and steps >= 0")
    check_real("learning_rate", cfg.learning_rate, open_low=True)
    check_real("init_std", cfg.init_std)
    check_int("num_alleles", cfg.num_alleles, 1)
    if cfg.mlp_hidden is not None:
        check_int("mlp_hidden", cfg.mlp_hidden, 1)
    domain = cfg.num_alleles if cfg.scenario == "genotype" else cfg.grid_size
    if (
        cfg.embedding == "onehot"
        and cfg.dim is not None
        and cfg.dim != domain
        and cfg.scenario in ("pairwise", "genotype")
    ):
        raise ValueError(f"embedding='onehot' needs dim = domain size {domain} (or None), got dim={cfg.dim}")
    if cfg.scenario == "genotype" and max(train_counts(cfg)[-1], *cfg.eval_agents) > cfg.num_alleles:
        raise ValueError(
            f"genotype sequences hold distinct alleles: agent counts must be <= num_alleles={cfg.num_alleles}"
        )


# ---------------------------------------------------------------------------- data
def train_counts(cfg: FitConfig) -> list[int]:
    """The agent counts of the training worlds."""
    return list(range(cfg.train_agents, (cfg.train_agents_max or cfg.train_agents) + 1))


def draw_train(cfg: FitConfig, rules=None) -> Dataset:
    """The training set: num_train worlds at L*, or equal shares of every count in the range, padded."""
    counts = train_counts(cfg)
    if len(counts) == 1:
        return draw(cfg, cfg.num_train, counts[0], cfg.seed, rules)
    shares = [cfg.num_train // len(counts) + (k < cfg.num_train % len(counts)) for k in range(len(counts))]
    parts = [
        draw(cfg, n, L, cfg.seed + 7919 * k, rules)
        for k, (n, L) in enumerate(zip(shares, counts, strict=True))
    ]
    return Dataset.concat(parts)


def draw(cfg: FitConfig, num: int, L: int, seed: int, rules=None) -> Dataset:
    """A set of ``num`` sequences of ``L`` tokens; single-feature tokens come as (B, L), others (B, L, F)."""
    if cfg.scenario == "genotype":
        tokens, targets = make_genotype_dataset(rules, num, L, seed=seed)
        mask = torch.ones(num, L, dtype=torch.bool)
        data = Dataset(tokens, targets, mask, (cfg.num_alleles,), torch.zeros(num, L, 2, dtype=torch.long))
    else:
        unique = cfg.unique_positions and seed == cfg.seed  # only the training set follows the control
        data = make_dataset(cfg.scenario, num, L, cfg.grid_size, cfg.radius, seed=seed, unique=unique)
    if data.tokens.shape[-1] == 1:
        data.tokens = data.tokens[..., 0]
    return data


# ---------------------------------------------------------------------------- model
def build_model(cfg: FitConfig, domain: tuple[int, ...]) -> Predictor:
    """Embedding -> attention (scalar per token) -> optional ReLU MLP, initialised as configured."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    emb = make_embedding(cfg.embedding, domain, cfg.dim)
    att = make_attention(
        cfg.attention,
        dim=emb.dim,
        heads=cfg.heads,
        kind=cfg.kind,
        factors=cfg.factors,
        order=cfg.order,
        out_dim=1 if cfg.mlp_hidden is None else cfg.mlp_hidden,
        rank=cfg.rank,
    )
    model = Predictor(emb, att, mlp_hidden=cfg.mlp_hidden)
    if cfg.init_std > 0:
        with torch.no_grad():
            for p in model.attention.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * cfg.init_std)
    return model.to(getattr(torch, cfg.dtype))


TABLE_ENTRIES = 2**26  # above this many table entries (M^n per term) the gather path stops paying


def use_tables(model: Predictor) -> bool:
    """Train and evaluate through the domain tables when the model has them and they are small."""
    if not model.has_table_path() or model.attention.out_dim > 1:
        return False  # gathering o-wide table entries (B L^n o) loses to the forward pass when o > 1
    terms = getattr(model.attention, "terms", [model.attention])  # AttentionSum or one module
    return sum(model.embedding.num_tokens ** getattr(t, "order", 2) for t in terms) <= TABLE_ENTRIES


def mse(model: Predictor, data: Dataset, batch: int = 4096) -> float:
    """Mean squared error over real tokens, computed in batches without gradients."""
    total, count = 0.0, 0
    forward = model.forward_table if use_tables(model) else model
    with torch.no_grad():
        for i in range(0, len(data), batch):
            tok, y, m = data.tokens[i : i + batch], data.targets[i : i + batch], data.mask[i : i + batch]
            pred = forward(tok, m)
            total += float(((pred - y.to(pred.dtype)) ** 2 * m).sum())
            count += int(m.sum())
    return total / count


def devised_table(cfg: FitConfig, rules=None) -> np.ndarray | None:
    """The exact C_{mu nu} W_nu over the domain, where the paper gives one."""
    if cfg.attention != "sa" or cfg.train_agents_max not in (None, cfg.train_agents):
        return None  # the devised tables are single-length linear SA's
    if cfg.scenario == "pairwise":
        return -devised.one_hot_band(cfg.grid_size, cfg.radius)[0].numpy()  # C W with W = -1
    if cfg.scenario == "genotype":
        C, W = devised.genotype_parameters(rules.as_dict(), cfg.num_alleles, cfg.train_agents)
        return (C * W[:, 0][None, :]).numpy()
    return None


# ---------------------------------------------------------------------------- loop
class Clock:
    """Wall and CPU seconds of a run, summed over every process that worked on it (resumes included)."""

    def __init__(self):
        self.t0, self.c0, self.before = time.perf_counter(), time.process_time(), (0.0, 0.0)

    def total(self) -> tuple[float, float]:
        return (
            self.before[0] + time.perf_counter() - self.t0,
            self.before[1]
            + time.process_time()
            - self.c0,  # wall time on a shared machine overstates the cost
        )


def train(
    cfg: FitConfig, model: Predictor, data: Dataset, run: Run, writer, clock: Clock
) -> dict[int, float]:
    """Adam + cosine decay on minibatches; checkpoints (and one on Ctrl-C); returns {step: batch MSE}."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / max(cfg.steps, 1)))
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the global batches: the same on every rank
    history: dict[int, float] = {}
    step = 0
    state = dist.broadcast(run.load_torch() if run.resumed else None)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        step, history = state["step"], state["history"]
        clock.before = state.get("seconds", (0.0, 0.0))
        if dist.is_main():
            print(f"resumed {run.path} at step {step}")
    fast = use_tables(model)  # G = P C P^T once per step, then a gather: O(N^2 d) not O(B L^2 d)
    forward = dist.wrap(model, torch.device("cpu"), "forward_table" if fast else "forward")
    world = dist.world_size()
    show = cfg.progress and dist.is_main()
    bar = tqdm(total=cfg.steps, initial=step, disable=not show, desc="fit", unit="step")
    while step < cfg.steps:
        idx = torch.randint(0, len(data), (min(cfg.batch_size, len(data)),), generator=gen)
        count = data.mask[idx].sum() if world > 1 else None  # real tokens of the global batch
        idx = idx[dist.shard(len(idx))]  # this rank's part of it
        tok, y, m = data.tokens[idx], data.targets[idx], data.mask[idx]
        pred = forward(tok, m)
        # this rank's share of the global batch's mean: the shares sum to the single-process loss
        loss = ((pred - y.to(pred.dtype)) ** 2 * m).sum() / (count if world > 1 else m.sum())
        opt.zero_grad(set_to_none=True)
        (loss * world if world > 1 else loss).backward()  # DDP averages gradients over the ranks
        opt.step()
        sched.step()
        step += 1
        stop, (value,) = dist.stop_everywhere(run.stop_requested, [loss.item()])
        history[step] = value
        if dist.is_main() and (step % 10 == 0 or step == cfg.steps):
            writer.add_scalar("losses/train_mse_batch", value, step)
            bar.set_postfix(mse=f"{value:.2e}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
            state = dict(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict())
            state.update(gen=gen.get_state(), step=step, history=history, seconds=clock.total())
            run.save_torch(state, step)
        if stop:
            bar.close()
            run.exit_interrupted(step)
    bar.close()
    return history


def main(cfg: FitConfig) -> dict:
    """Run the experiment end to end; returns (and writes) the metrics."""
    validate(cfg)
    manifest = runs.make_manifest("fit", cfg)
    with (
        dist.session(torch.device("cpu")),
        dist.open_on_rank0(
            lambda: runs.open_run(
                cfg.runs_dir,
                cfg.name,
                manifest,
                may_change=FIT_MAY_CHANGE,
                overwrite=cfg.overwrite or not cfg.resume,
                defaults=runs.field_defaults(cfg),
                name_flag="run-name",
                renamed=FIT_RENAMED,
            )
        ) as run,
    ):
        return run_fit(cfg, run)


def run_fit(cfg: FitConfig, run: Run) -> dict:
    """Draw the data, train (or resume), evaluate and write the metrics of an open run."""
    clock = Clock()
    torch.manual_seed(cfg.seed)
    rules = sample_rules(cfg.num_alleles, seed=cfg.seed) if cfg.scenario == "genotype" else None
    data = draw_train(cfg, rules)
    fixed = cfg.train_agents_max in (None, cfg.train_agents)  # padded sets would count their padding
    versatility = (
        versatility_report(data.tokens, data.domain[0]) if data.tokens.dim() == 2 and fixed else None
    )
    model = build_model(cfg, data.domain)
    if not dist.is_main():  # under torchrun: train this rank's shards; rank 0 evaluates and writes
        train(cfg, model, data, run, None, clock)
        return {}
    if versatility is not None:
        print(
            f"training data versatility (rank of S_B_mu for every mu): ok={versatility['ok']} "
            f"min rank {versatility['min_rank']}/{versatility['domain_size']}"
        )
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run.path)) as writer:
        history = train(cfg, model, data, run, writer, clock)
        metrics = evaluate(cfg, model, data, rules)
        for L, v in metrics["test_mse"].items():
            writer.add_scalar("eval/test_mse", v, L)
    metrics.update(
        versatility_rank_ok=None if versatility is None else versatility["ok"],
        versatility=versatility,
        num_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        seconds=clock.total()[0],
        cpu_seconds=clock.total()[1],
        steps=cfg.steps,
        run=str(run.path),
        world_size=dist.world_size(),
    )
    if cfg.figures:
        metrics["figures"] = write_figures(cfg, model, history, metrics, run.path, rules)
    run.update_metrics(metrics)
    print_table(metrics)
    print(runs.outputs_line(run.path))
    return metrics


def evaluate(cfg: FitConfig, model: Predictor, data: Dataset, rules) -> dict:
    """train_mse, test_mse per agent count (fresh sets), and product_mse against the devised table."""
    out = {"train_mse": mse(model, data), "test_mse": {}}
    for L in cfg.eval_agents:
        out["test_mse"][int(L)] = mse(model, draw(cfg, cfg.num_test, int(L), cfg.seed + 1000 + int(L), rules))
    target = devised_table(cfg, rules)
    with torch.no_grad():
        learned = (
            model.pair_table()
            if target is not None and model.mlp is None and model.has_table_path()
            else None
        )
    out["product_mse"] = (
        None
        if target is None or learned is None
        else float(((learned.double().numpy() - target) ** 2).mean())
    )
    return out


def print_table(metrics: dict) -> None:
    print(f"train MSE {metrics['train_mse']:.3e}   product MSE {metrics['product_mse']}")
    print(f"{'agents L':>9} {'test MSE':>11}")
    for L, v in metrics["test_mse"].items():
        print(f"{L:>9} {v:>11.3e}")


@torch.no_grad()
def write_figures(cfg: FitConfig, model: Predictor, history: dict, metrics: dict, run: Path, rules) -> dict:
    """The paper's Figures 1-4 for this run, plus test MSE against L and the loss curve."""
    from viz import figures

    out = {
        "ood": str(
            figures.ood_curve(
                {f"{cfg.attention}-{cfg.kind}": metrics["test_mse"]},
                run / "ood.png",
                train_agents=cfg.train_agents,
            )
        ),
        "loss": str(figures.loss_curve(history, run / "loss.png")),
    }
    target = devised_table(cfg, rules)
    if target is None and cfg.attention == "hfa":  # HFA learns the same target function: show it too
        target = devised_table(dataclasses.replace(cfg, attention="sa"), rules)
    panels = {}
    if model.has_table_path() and model.mlp is None and target is not None:
        from policies.hfa import HyperFeatureAttention
        from policies.sa import SelfAttention
        from viz.readout import hfa_factor_tables

        att = model.attention
        if isinstance(att, HyperFeatureAttention):  # each factor's map, then their product
            factors, product = hfa_factor_tables(model)
            for a, f in enumerate(factors.numpy(), 1):
                panels[f"learned factor {a}: P C_{a} P^T (mean over heads)"] = f
            panels["learned product C.W (domain basis)"] = product.numpy()
        else:
            if isinstance(att, SelfAttention):
                head = " (head 1)" if att.heads > 1 else ""
                panels[f"learned C{head}"] = att.interaction()[0].detach().double().numpy()
                if cfg.scenario == "pairwise":
                    panels["devised C"] = devised_C(cfg)
            try:
                panels["learned C.W (domain basis)"] = model.pair_table().double().numpy()
            except TypeError:  # an order-3 HA alone has no pair table
                pass
        if panels:
            panels["devised C.W"] = target
    if panels:
        out["matrices"] = str(
            figures.matrix_panels(
                panels,
                run / "interaction_matrices.png",
                title=f"{cfg.attention}-{cfg.kind}, {cfg.embedding} embedding, {cfg.scenario}",
            )
        )
    if cfg.scenario == "pairwise" and cfg.grid_size % 2 == 0:  # p(n) needs an even N
        # Both curves in the basis of this run's sinusoidal flavour (the paper's p(n) otherwise):
        # the learned one is the model's pair table read in that basis, so every linear pairwise
        # model has one, whatever its embedding.
        from viz.readout import sinusoidal_diagonal

        normalized = cfg.embedding == "sinusoidal_normalized"
        devised_diag = devised.sinusoidal_diagonal(cfg.grid_size, cfg.radius, normalized)[0].diagonal()
        diag = {"devised (Dirichlet kernel)": devised_diag}
        learned, off, why = sinusoidal_diagonal(model, normalized)
        basis = "normalized p(n)" if normalized else "p(n)"
        title = f"diag of C in the {basis} basis, N={cfg.grid_size}, R={cfg.radius}"
        if learned is None:
            title += f"\nlearned diagonal not defined: {why}"
        else:
            name = f"learned {cfg.attention}-{cfg.kind}, {cfg.embedding} (off-diagonal share {off:.0%})"
            diag[name] = learned
        out["diagonal"] = str(
            figures.diagonal_plot({k: v.numpy() for k, v in diag.items()}, run / "figure1.png", title=title)
        )
    return out


def devised_C(cfg: FitConfig) -> np.ndarray:
    """The devised C in this run's embedding basis (band for one-hot, diagonal for sinusoidal)."""
    if cfg.embedding == "onehot":
        return devised.one_hot_band(cfg.grid_size, cfg.radius)[0].numpy()
    if cfg.embedding.startswith("sinusoidal"):
        return devised.sinusoidal_diagonal(
            cfg.grid_size, cfg.radius, normalized=cfg.embedding.endswith("normalized")
        )[0].numpy()
    return np.zeros((1, 1))


def load_run(run: str | Path) -> tuple[FitConfig, Predictor]:
    """Rebuild a fit run's config and trained predictor from its folder (its verified checkpoint).

    Raises:
        FileNotFoundError: no such folder, or no config.json / checkpoint in it.
        ValueError: the folder holds a run of another command.
    """
    run = Path(run)
    raw = runs.read_manifest(run, FIT_RENAMED) if run.is_dir() else None
    if raw is None:
        raise FileNotFoundError(f"{run} has no config.json: is it a `hyperagents fit` run folder?")
    command = raw.get("command", "fit" if "scenario" in raw else "another command")
    if command != "fit" or "scenario" not in raw:
        raise ValueError(f"{run} is a `hyperagents {command}` run, not a `hyperagents fit` run")
    names = {f.name for f in dataclasses.fields(FitConfig)}
    cfg = FitConfig(**{k: v for k, v in raw.items() if k in names})
    cfg.eval_agents = tuple(cfg.eval_agents)
    checkpoint = runs.find_checkpoint(run)
    if checkpoint is None:
        raise FileNotFoundError(
            f"{run} has no checkpoint yet: train it with `hyperagents fit --run-name {run.name}`"
        )
    rules = sample_rules(cfg.num_alleles, seed=cfg.seed) if cfg.scenario == "genotype" else None
    domain = draw(cfg, 1, min(cfg.train_agents, 2), cfg.seed + 7, rules).domain
    model = build_model(cfg, domain)
    model.load_state_dict(runs.load_torch(checkpoint.path)["model"])
    return cfg, model.eval()
