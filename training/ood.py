"""``hyperagents ood``: evaluate trained crossing policies at agent counts never seen in training.

For every agent count L in ``counts`` it samples ``episodes`` start configurations once (seeded by
``seed`` and L) and plays them with every trained run and with the scripted baselines
(MOVE_RIGHT, greedy, uniform random), so all algorithms face the SAME starts. One episode's
score is the mean return of its L agents.

Trained policies run at any L through the torch policy (``policy.get_distribution``), which does
not check observation shapes; the extractors in ``policies/actor_critic.py`` read L per batch.

Reported per (L, algorithm): mean and IQM (mean of the middle 50% of episodes) with 95%
percentile stratified-bootstrap CIs (strata = runs/seeds; episodes resampled within each), and
the gain over MOVE_RIGHT with a CI from a paired bootstrap over the shared starts. The gain is
relative, ``(mean return - mean return_MR) / |mean return_MR|`` (+0.5: half of MOVE_RIGHT's
collision cost avoided), except where MOVE_RIGHT's mean return is 0 (no collisions to avoid,
common at small L with few episodes): there it is the absolute difference ``mean return -
mean return_MR`` in return units, and ``gain_kind`` says "absolute" (the table marks it "abs").

Outputs in ``out_dir`` (default: the first run's directory):
- ``ood.json``: marl-eval format ``env -> task -> algorithm -> run -> step_0 {step_count, return}``
  plus ``absolute_metrics {return}`` per run (the same per-episode values: no separate bigger
  evaluation is done). env = "crossing", task = "L=<count>".
- ``ood_summary.json``: the aggregated statistics above.
- ``ood.png``: return and gain against agent count, baselines drawn in.

Example::

    hyperagents ood --run runs/crossing__sa__0 --counts 2 4 8 16 32 64 --episodes 30
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from envs.checks import check_int
from envs.crossing import POLICIES, STAY, Crossing
from training import runs

TASK_KEYS = ("grid_size", "radius", "max_steps", "start_width", "two_way", "predator_prey")


@dataclass
class OODConfig:
    """Evaluate checkpoints at several agent counts against the scripted baselines."""

    run: tuple[str, ...] = ()
    """run directories (runs/<name>) written by `hyperagents train`; several = seeds"""
    checkpoint: str | None = None
    """checkpoint file in each run directory (None: its latest verified checkpoint; warm_start.zip:
    the DAgger clone before PPO)"""
    counts: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    """agent counts L to evaluate at"""
    episodes: int = 30
    """episodes (start configurations) per agent count"""
    seed: int = 12345
    """seed of the evaluation starts (independent of training seeds)"""
    deterministic: bool = False
    """trained policies take their most likely action instead of sampling (PPO's policy samples;
    argmax can collapse to always-RIGHT when avoidance lives in the action probabilities)"""
    reps: int = 20_000
    """bootstrap resamples"""
    chunk: int = 512
    """agents per policy forward pass (bounds memory at large L)"""
    neighbours: int | None = None
    """cap attention at self + this many nearest agents at evaluation (None: as trained). A cap >=
    L_train - 1 changes nothing at the training count, so it equals training with that cap"""
    out_dir: str | None = None
    """where outputs go (default: the first run's directory)"""
    merge: tuple[str, ...] = ()
    """instead of evaluating, merge these ood.json files (e.g. seeds evaluated one by one with the
    same counts, episodes and seed) and write the combined outputs"""
    threads: int = 1
    """torch CPU threads"""


# ---------------------------------------------------------------- statistics (numpy)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: mean of the middle 50% (drops floor(n/4) values at each end)."""
    x = np.sort(np.asarray(x, dtype=float), axis=axis)
    n = x.shape[axis]
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap(strata: list[np.ndarray], stat: Callable, reps: int, seed: int = 0) -> tuple:
    """95% percentile CI of ``stat`` over the pooled values, resampling within each stratum."""
    rng = np.random.default_rng(seed)
    samples = [s[rng.integers(0, len(s), size=(reps, len(s)))] for s in strata]  # (reps, n_s) each
    values = stat(np.concatenate(samples, axis=1), axis=1)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


# A 95% percentile interval needs at least 40 resamples for its 2.5% tails to hold one each
MIN_REPS = 40
ZERO_RETURN = 1e-9  # |mean return_MR| below this has no relative gain: the absolute difference is used


def gain(mean: float, ref: float) -> tuple[float, str]:
    """(gain over the reference, "relative" or "absolute"); see the module docstring."""
    if abs(ref) < ZERO_RETURN:
        return mean - ref, "absolute"
    return (mean - ref) / abs(ref), "relative"


def paired_gain_ci(
    ret: np.ndarray, ref: np.ndarray, reps: int, seed: int = 0, kind: str = "relative"
) -> tuple:
    """95% CI of the gain of ret over ref, resampling the shared starts in pairs.

    ret: (S, E) per seed and episode; ref: (E,) the reference on the same starts. kind "relative":
    (mean ret - mean ref) / |mean ref|; "absolute": mean ret - mean ref.
    """
    rng = np.random.default_rng(seed)
    S, E = ret.shape
    idx = rng.integers(0, E, size=(reps, E))  # (reps, E), the same draw for every seed
    r = ret[:, idx].mean(axis=(0, 2))  # (reps,)
    m = ref[idx].mean(axis=1)
    if kind == "absolute":
        lo, hi = np.percentile(r - m, [2.5, 97.5])
        return float(lo), float(hi)
    ok = (
        np.abs(m) >= ZERO_RETURN
    )  # a resample whose reference return is exactly 0 has no defined gain: dropped
    gains = (r[ok] - m[ok]) / np.abs(m[ok])
    if gains.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(gains, [2.5, 97.5])
    return float(lo), float(hi)


# ---------------------------------------------------------------- rollouts


def policy_actor(model, deterministic: bool, chunk: int, features: str = "base") -> Callable:
    """Crossing -> (B, L) actions from a trained policy, for any L (see module docstring).

    ``model``: an SB3 ``PPO`` (sb3 backend) or a ``TokenActorCritic`` (torchrl backend).
    ``features``: the observation feature set the policy was trained on (its run's config).

    Only agents that can still move are fed to the policy: parked and padded agents get STAY,
    which the task would substitute anyway. Sampling draws from torch's global generator.
    """
    if isinstance(model, PPO):
        policy = model.policy.eval()

        def decide(obs: torch.Tensor) -> torch.Tensor:  # (M, L*F) -> (M,)
            return policy.get_distribution(obs).get_actions(deterministic=deterministic)
    else:
        net = model.eval()

        def decide(obs: torch.Tensor) -> torch.Tensor:
            logits = net.actor(obs.reshape(len(obs), -1, net.num_features))  # (M, A)
            return (
                logits.argmax(-1)
                if deterministic
                else torch.distributions.Categorical(logits=logits).sample()
            )

    def act(env: Crossing, gen: torch.Generator | None = None) -> torch.Tensor:
        active = env.active.reshape(-1)  # (B*L,)
        obs = env.observations(features).reshape(env.B * env.L, -1)[active]  # (M, L*F)
        actions = torch.full((env.B * env.L,), STAY, dtype=torch.long, device=env.device)
        if not active.any():
            return actions.reshape(env.B, env.L)
        with torch.no_grad():
            out = [decide(o) for o in obs.split(chunk)]
        actions[active] = torch.cat(out).long()
        return actions.reshape(env.B, env.L)

    return act


def play(env: Crossing, actor: Callable, start_seed: int, act_seed: int) -> np.ndarray:
    """One batch of episodes from the starts of ``start_seed``; (B,) mean return per world.

    Stops early once every learner of every world is parked: no new collision (and no reward) can
    happen before the time limit after that (the predator-prey hunters cannot reach them; see
    ``envs/crossing.py``). A world's score averages its learners (predator-prey: its prey).
    """
    env.seed(start_seed)
    env.reset()
    gen = torch.Generator().manual_seed(act_seed)
    torch.manual_seed(act_seed)  # SB3 samples actions from torch's global generator
    total = torch.zeros(env.B, env.L, device=env.device)
    while not env.done.all() and not (env.parked | ~env.learners).all():
        total += env.step(actor(env, gen))
    return (total.sum(1) / env.learners.sum(1)).cpu().numpy()


def load_runs(
    paths: tuple[str, ...], neighbours: int | None = None, checkpoint: str | None = None
) -> list[dict]:
    """[{algo, seed, model, steps, path}] for each run directory.

    ``checkpoint``: the file read in each (None: the run's latest checkpoint whose checksum holds).
    """
    out = []
    for p in paths:
        path = Path(p)
        cfg = runs.read_manifest(path) if path.is_dir() else None
        found = runs.find_checkpoint(path) if cfg is not None and checkpoint is None else None
        ckpt = path / checkpoint if checkpoint is not None else (found.path if found else None)
        if cfg is None or ckpt is None or not ckpt.exists():
            what = checkpoint or "a checkpoint"
            raise ValueError(f"run must be a directory with {what} and config.json, got {p!r}")
        if cfg.get("command", "train") != "train" or "family" not in cfg:
            raise ValueError(f"{p} is a `hyperagents {cfg.get('command')}` run; ood evaluates `train` runs")
        if cfg.get("backend", "sb3") == "torchrl":
            from training.marl_torchrl import load_net  # torchrl loads only for its runs

            model, steps = load_net(ckpt, cfg)
            extractor = model.actor_encoder
        elif cfg.get("backend") == "rllib":
            from training.marl_rllib import load_net  # the checkpoint's policy.pt: no Ray needed

            model, steps = load_net(ckpt, cfg)
            extractor = model.actor_encoder
        else:
            model = PPO.load(ckpt, device="cpu")
            steps, extractor = int(model.num_timesteps), model.policy.features_extractor
        if neighbours is not None:
            if not hasattr(extractor, "neighbours"):
                raise ValueError(
                    f"neighbours caps an attention policy's view; {p} is an MLP run, whose input is "
                    "a fixed number of neighbours"
                )
            extractor.neighbours = neighbours
        out.append(
            dict(
                algo=cfg["family"],
                seed=cfg["seed"],
                model=model,
                steps=steps,
                path=str(path),
                task={"two_way": False, "predator_prey": False} | {k: cfg[k] for k in TASK_KEYS if k in cfg},
                features=cfg.get("features", "base"),  # runs from before the option: "base"
            )
        )
    return out


# ---------------------------------------------------------------- main


def evaluate(cfg: OODConfig, trained: list[dict]) -> dict:
    """Per-episode returns: {L: {algo: {seed: (step_count, np.ndarray (E,))}}}."""
    task = trained[0]["task"] if trained else {}  # every run is evaluated on the first run's task
    for run in trained[1:]:
        if run["task"] != task:  # one table holds one task: the same starts and the same rules
            first = trained[0]["path"]
            raise ValueError(f"run {run['path']} has another task ({run['task']}) than {first} ({task})")
    results: dict = {}
    for L in cfg.counts:
        env = Crossing(num_worlds=cfg.episodes, num_agents=L, **task)
        starts = cfg.seed + 1000 * L
        res: dict = {name: {0: (0, play(env, fn, starts, cfg.seed))} for name, fn in POLICIES.items()}
        for run in trained:
            actor = policy_actor(run["model"], cfg.deterministic, cfg.chunk, run["features"])
            res.setdefault(run["algo"], {})[run["seed"]] = (run["steps"], play(env, actor, starts, cfg.seed))
        results[L] = res
        line = ", ".join(f"{a} {np.mean([v[1].mean() for v in s.values()]):.3f}" for a, s in res.items())
        print(f"L={L}: {line}", flush=True)
    return results


def summarise(results: dict, reps: int) -> dict:
    """{L: {algo: mean, iqm, ci_mean, ci_iqm, gain, gain_kind, ci_gain, episodes, seeds}}."""
    summary: dict = {}
    for L, res in results.items():
        ref = res["move_right"][0][1]
        summary[L] = {}
        for algo, seeds in res.items():
            strata = [v[1] for v in seeds.values()]
            pooled = np.concatenate(strata)
            mean = float(pooled.mean())
            value, kind = gain(mean, float(ref.mean()))
            summary[L][algo] = {
                "mean": mean,
                "iqm": float(iqm(pooled)),
                "ci_mean": stratified_bootstrap(strata, np.mean, reps),
                "ci_iqm": stratified_bootstrap(strata, iqm, reps),
                "gain": value,
                "gain_kind": kind,
                "ci_gain": paired_gain_ci(np.stack(strata), ref, reps, kind=kind),
                "episodes": int(pooled.size),
                "seeds": len(strata),
            }
    return summary


def load_merged(paths: tuple[str, ...]) -> dict:
    """Results dict from several ood.json files; baselines must agree (same starts)."""
    results: dict = {}
    for p in paths:
        for task, algos in json.loads(Path(p).read_text())["crossing"].items():
            L = int(task.removeprefix("L="))
            for algo, seeds in algos.items():
                for seed, record in seeds.items():
                    values = np.asarray(record["step_0"]["return"])
                    entry = (record["step_0"]["step_count"], values)
                    old = results.setdefault(L, {}).setdefault(algo, {}).setdefault(int(seed[5:]), entry)
                    if not np.array_equal(old[1], values) and algo in POLICIES:
                        raise ValueError(
                            f"merge: {p} has different {algo} returns at L={L}; evaluations "
                            "must share counts, episodes and seed"
                        )
                    results[L][algo][int(seed[5:])] = entry
    return dict(sorted(results.items()))


def marl_eval_json(results: dict) -> dict:
    """marl-eval layout: env -> task -> algorithm -> run -> step_0 / absolute_metrics."""
    out: dict = {"crossing": {}}
    for L, res in results.items():
        task = out["crossing"][f"L={L}"] = {}
        for algo, seeds in res.items():
            task[algo] = {}
            for seed, (steps, values) in seeds.items():
                task[algo][f"seed_{seed}"] = {
                    "step_0": {"step_count": steps, "return": values.tolist()},
                    "absolute_metrics": {"return": values.tolist()},
                }
    return out


def markdown_table(summary: dict) -> str:
    """Rows L; per algorithm: mean return [95% CI] and gain over MOVE_RIGHT [paired 95% CI]
    ("abs": an absolute difference in return, where MOVE_RIGHT's mean return is 0)."""
    algos = list(next(iter(summary.values())))
    head = "| L | " + " | ".join(f"{a} return | {a} gain" for a in algos) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(algos))]
    for L, res in summary.items():
        cells = []
        for a in algos:
            if a not in res:
                cells += ["not run", "not run"]
                continue
            v = res[a]
            cells.append(f"{v['mean']:.3f} [{v['ci_mean'][0]:.3f}, {v['ci_mean'][1]:.3f}]")
            unit = " abs" if v.get("gain_kind") == "absolute" else ""
            cells.append(f"{v['gain']:+.2f}{unit} [{v['ci_gain'][0]:+.2f}, {v['ci_gain'][1]:+.2f}]")
        lines.append(f"| {L} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Return (left) and gain over MOVE_RIGHT (right) against L, 95% CIs as bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(summary)
    algos = list(summary[counts[0]])
    styles = {
        "move_right": ("k", "--"),
        "greedy": ("tab:gray", "-."),
        "cautious": ("tab:olive", "-."),
        "priority": ("tab:brown", ":"),
        "random": ("tab:red", ":"),
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    gains = []  # (L, gain, colour) of every point drawn on the gain panel, to mark clipped ones
    palette = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:cyan", "tab:pink"])
    for algo in algos:
        color, ls = styles.get(algo) or (next(palette, None), "-")
        for ax, key, ci in ((axes[0], "mean", "ci_mean"), (axes[1], "gain", "ci_gain")):
            if key == "gain" and algo == "random":
                continue  # far below the others; its returns are in the left panel
            xs = [L for L in counts if algo in summary[L]]  # an algorithm may skip some counts
            if key == "gain":  # absolute differences (MOVE_RIGHT's return 0) are on another scale
                xs = [L for L in xs if summary[L][algo].get("gain_kind", "relative") == "relative"]
            if not xs:
                continue
            y = [summary[L][algo][key] for L in xs]
            lo, hi = zip(*(summary[L][algo][ci] for L in xs), strict=True)
            n = summary[xs[0]][algo]["seeds"]
            label = algo if algo in styles else f"{algo.upper()} ({n} seed{'s' * (n != 1)})"
            (line,) = ax.plot(xs, y, ls, marker="o", color=color, label=label, lw=2)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
            if key == "gain":
                gains += [(L, v, line.get_color()) for L, v in zip(xs, y, strict=True)]
    axes[0].set_yscale("symlog", linthresh=1.0)
    axes[0].set_ylabel("mean return per agent (symlog)")
    axes[1].set_ylabel("gain over MOVE_RIGHT: (R - R_MR) / |R_MR|")
    axes[1].axhline(0, color="k", lw=0.8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("agents per world L")
        ax.grid(alpha=0.3)
    axes[0].set_title("Crossing: return vs agent count (95% bootstrap CI)")
    axes[1].set_title("Gain relative to MOVE_RIGHT (paired 95% CI)")
    axes[0].legend(loc="center left", fontsize=9)
    relative = [
        v["gain"]
        for L in counts
        for a, v in summary[L].items()
        if a != "random" and v.get("gain_kind", "relative") == "relative"
    ]
    low = min(relative, default=0.0)
    # Gains below -1 (and CIs of tiny-|R_MR| counts) would squash the rest: the axis stops at -1 and
    # a point beyond it is drawn as a triangle on the edge, labelled with its value.
    bottom, top = max(-1.0, min(-0.2, low - 0.1)), 1.05
    axes[1].set_ylim(bottom, top)
    clipped = [(L, v, c) for L, v, c in gains if not bottom <= v <= top]
    for L, v, color in clipped:
        edge, marker, dy = (bottom, "v", 8) if v < bottom else (top, "^", -12)
        axes[1].plot([L], [edge], marker=marker, ms=10, color=color, clip_on=False, zorder=5)
        axes[1].annotate(f"{v:.2f}", (L, edge), xytext=(4, dy), textcoords="offset points", fontsize=8)
    if clipped:
        axes[1].plot([], [], "v", color="gray", ms=8, label="off the axis (value shown)")
        axes[1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(cfg: OODConfig) -> dict:
    """Evaluate, write ood.json / ood_summary.json / ood.png; returns the summary."""
    if not cfg.counts:
        raise ValueError("counts must list at least one agent count >= 1")
    for count in cfg.counts:
        check_int("counts", count, 1)
    for name, low in (("episodes", 1), ("reps", MIN_REPS), ("chunk", 1), ("threads", 1)):
        check_int(name, getattr(cfg, name), low)
    if cfg.neighbours is not None:
        check_int("neighbours", cfg.neighbours, 1)
    torch.set_num_threads(cfg.threads)
    trained = [] if cfg.merge else load_runs(tuple(cfg.run), cfg.neighbours, cfg.checkpoint)
    out_dir = Path(cfg.out_dir or (cfg.run[0] if cfg.run else "runs/ood"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_merged(tuple(cfg.merge)) if cfg.merge else evaluate(cfg, trained)
    summary = summarise(results, cfg.reps)
    (out_dir / "ood.json").write_text(json.dumps(marl_eval_json(results)))
    config = asdict(cfg)
    if cfg.merge:  # what the merged evaluations used; ood.json keeps neither their seed nor action mode
        episodes = next(iter(results.values()))["move_right"][0][1].size
        config |= {"counts": list(results), "episodes": int(episodes), "seed": None, "deterministic": None}
    record = {"config": config, "summary": {str(L): s for L, s in summary.items()}}
    (out_dir / "ood_summary.json").write_text(json.dumps(record, indent=1))
    plot(summary, out_dir / "ood.png")
    (out_dir / "ood_table.md").write_text(markdown_table(summary))
    if len(trained) == 1:  # a run's metrics.json holds every figure it reports
        mode = f"{'det' if cfg.deterministic else 'sto'}_{f'k{cfg.neighbours}' if cfg.neighbours else 'full'}"
        runs.merge_metrics(trained[0]["path"], {f"ood_{mode}": {str(L): s for L, s in summary.items()}})
    for L, s in summary.items():
        cells = [f"{a}: {v['mean']:.3f} gain {v['gain']:+.2f}" for a, v in s.items()]
        zero = (
            " (MOVE_RIGHT returns 0 here: gains are absolute differences)"
            if any(v["gain_kind"] == "absolute" for v in s.values())
            else ""
        )
        print(f"L={L:3d} " + "  ".join(cells) + zero)
    print(runs.outputs_line(out_dir, ["ood.json", "ood_summary.json", "ood.png", "ood_table.md"]))
    return summary
