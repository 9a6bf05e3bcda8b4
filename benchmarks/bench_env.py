"""Environment speed: our world against MPE2 and VMAS, side by side in one run.

    python benchmarks/bench_env.py                   # full run (~5 min on 2 CPU cores)
    python benchmarks/bench_env.py --quick           # tiny sizes, seconds (a smoke test)
    python benchmarks/bench_env.py --device cuda --out /tmp/env_cuda.json   # GPU sections, < 90 s on an H200
    python benchmarks/bench_env.py --merge /tmp/env_cuda.json   # file that GPU run beside the CPU's

A CUDA run skips section 1 (the PettingZoo API steps one env on the CPU by design), makes one pass,
extends section 3 to L = 16384, and files its result under "cuda" in the JSON, beside the CPU result
(which stays at the top level), and in a generated section at the end of benchmarks/README_env.md.

Peers are imported lazily; a missing one is reported ("peer not installed: pip install -e .[bench]")
and its rows are marked skipped. Measured, with ``torch.set_num_threads(2)``:

  1. PettingZoo parallel API, one env, L in {3, 10, 20}: ``parallel_env(num_agents=L)`` against
     MPE2 ``simple_spread_v3.parallel_env(N=L, max_cycles=25)``. A step includes building the
     action dict from pre-drawn numpy ints (the same way for both) and a reset when the episode
     ends. Ours also at ``max_cycles=25``, to show what the shorter episodes of MPE2 cost.
  2. Batched core: ``World`` + pairwise rewards, B worlds x L agents, against VMAS
     ``simple_spread`` (discrete actions), both stepping fixed random actions (PEERS.md section 8).
     A VMAS config whose step is predicted (from the smaller L, cost ~ L^2) to blow the time
     bound is skipped and recorded with the reason.
  3. One world (B = 1), L from 16 to 4096: dense (B, L, L) test against the neighbour grid,
     N = 360, R = 5, and where the two cross.

Timing: each measurement runs the step in a loop for ``seconds`` of wall time, ``repeats`` times,
and keeps the best rate (other processes share the machine; the best run is the least disturbed).
Shapes: B worlds, L agents, N grid size, R radius.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from envs.colliding_agents_v0 import parallel_env
from envs.scenarios import make_scenario
from envs.world import GRID_MIN_AGENTS, NUM_ACTIONS, World

ROOT = Path(__file__).resolve().parents[1]
MISSING = "peer not installed: pip install -e .[bench]"
GRID_SIZE, RADIUS = 360, 5


@dataclass
class BenchEnvConfig:
    """What to measure and for how long."""

    quick: bool = False
    """Tiny sizes and short timings (overrides the sizes and timings below): a smoke run."""
    device: str = "cpu"
    """Torch device of the batched sections (2, 3): cpu, or cuda if available (see the module doc)."""
    peers: bool = True
    """Measure MPE2 and VMAS (when installed) next to ours."""
    threads: int = 2
    """torch.set_num_threads."""
    seconds: float = 0.5
    """Wall time of one timed repeat."""
    repeats: int = 3
    """Timed loops per measurement and pass; the best rate is kept."""
    passes: int | None = None
    """Passes over all sections; each row keeps its best pass (spreads the repeats over time).
    None: 3 on the CPU, 1 on CUDA (a GPU run has the machine to itself)."""
    vmas_max_seconds: float = 10.0
    """Skip a VMAS config when its warm-up and timed steps are predicted to take longer than this."""
    pz_agents: tuple[int, ...] = (3, 10, 20)
    batch_worlds: tuple[int, ...] = (1, 1024, 8192)
    batch_agents: tuple[int, ...] = (3, 10, 20, 100)
    scaling_agents: tuple[int, ...] = (16, 64, 128, 192, 256, 512, 1024, 2048, 4096)
    out: Path | None = field(default_factory=lambda: ROOT / "benchmarks" / "results" / "env.json")
    """JSON output (None: do not write). A CPU run replaces its top level, a CUDA run its "cuda" key."""
    readme: Path | None = field(default_factory=lambda: ROOT / "benchmarks" / "README_env.md")
    """README whose generated GPU section a CUDA run or --merge rewrites (the CPU text is by hand)."""
    merge: Path | None = None
    """Copy the "cuda" entry of this JSON into --out, rewrite the README's GPU section, run nothing."""

    def __post_init__(self):
        cuda = self.device.startswith("cuda")
        if self.passes is None:
            self.passes = 1 if cuda else 3
        if cuda and not self.quick:
            self.scaling_agents = (16, 64, 256, 1024, 2048, 4096, 8192, 16384)
        if self.quick:
            self.seconds, self.repeats, self.passes, self.vmas_max_seconds = 0.05, 1, 1, 2.0
            self.pz_agents, self.batch_worlds, self.batch_agents = (3,), (1, 64), (3,)
            self.scaling_agents = (16, 64)


# ---------------------------------------------------------------------------- timing helpers
def sync(device: str) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_loop(step, seconds: float, device: str, min_calls: int) -> tuple[float, int]:
    """Call ``step()`` for about ``seconds`` (at least ``min_calls`` times); (calls/s, calls)."""
    n, t0 = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 8 == 0:
            sync(device)
    sync(device)
    return n / (time.perf_counter() - t0), n


def race(steps: dict, cfg: BenchEnvConfig, device: str = "cpu", min_calls: int = 1) -> dict:
    """Rates of several step functions measured in turns (a, b, a, b, ...), so that every
    contender sees the same background load; each keeps its best of ``cfg.repeats`` loops.

    Returns ``{name: {"calls_per_s": best, "runs_calls_per_s": [...], "runs_calls": [...]}}``.
    """
    for step in steps.values():  # warm-up
        step()
        sync(device)
    out = {name: {"runs_calls_per_s": [], "runs_calls": []} for name in steps}
    for _ in range(cfg.repeats):
        for name, step in steps.items():
            rate, n = timed_loop(step, cfg.seconds, device, min_calls)
            out[name]["runs_calls_per_s"].append(rate)
            out[name]["runs_calls"].append(n)
    for res in out.values():
        res["calls_per_s"] = max(res["runs_calls_per_s"])
        res["seconds_timed"] = sum(
            n / r for n, r in zip(res["runs_calls"], res["runs_calls_per_s"], strict=True)
        )
    return out


def import_peer(name: str):
    """The peer's module, or None (with the reason printed) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        print(f"{name}: {MISSING} ({err})")
        return None


def skipped(row: dict, reason: str) -> dict:
    """Mark a row as not measured."""
    return {**row, "skipped": reason, "env_steps_per_s": None, "agent_steps_per_s": None}


# ------------------------------------------------------------------ 1. PettingZoo parallel API
def pz_stepper(env, L: int, seed: int = 0):
    """A step function for a PettingZoo parallel env: pre-drawn random actions, reset at episode end."""
    acts = np.random.default_rng(seed).integers(0, NUM_ACTIONS, (1000, L)).tolist()  # Python ints
    env.reset(seed=seed)
    k = 0

    def step():
        nonlocal k
        if not env.agents:
            env.reset()
        env.step(dict(zip(env.agents, acts[k % 1000], strict=True)))
        k += 1

    return step


def pz_row(system: str, L: int, max_cycles: int, res: dict) -> dict:
    """One PettingZoo row: env-steps/s and agent-steps/s (every agent acts every step)."""
    rate = res["calls_per_s"]
    return {
        "section": "pettingzoo",
        "system": system,
        "L": L,
        "B": 1,
        "max_cycles": max_cycles,
        "env_steps_per_s": rate,
        "agent_steps_per_s": rate * L,
        "us_per_step": 1e6 / rate,
        **res,
    }


def bench_pettingzoo(cfg: BenchEnvConfig) -> list[dict]:
    """Section 1: ours vs MPE2 simple_spread through the parallel API, one env."""
    mpe2 = import_peer("mpe2.simple_spread_v3") if cfg.peers else None
    rows = []
    for L in cfg.pz_agents:
        steps = {
            "ours": pz_stepper(parallel_env(num_agents=L), L),
            "ours25": pz_stepper(parallel_env(num_agents=L, max_cycles=25), L),
        }
        if mpe2 is not None:
            steps["mpe2"] = pz_stepper(mpe2.parallel_env(N=L, max_cycles=25), L)
        res = race(steps, cfg)
        ours, ours25 = pz_row("ours", L, GRID_SIZE, res["ours"]), pz_row("ours", L, 25, res["ours25"])
        base = {"section": "pettingzoo", "system": "mpe2", "L": L, "B": 1, "max_cycles": 25}
        peer = pz_row("mpe2", L, 25, res["mpe2"]) if mpe2 is not None else skipped(base, peer_reason(cfg))
        for row in (ours, ours25):
            row["ratio_vs_peer"] = ratio(row, peer)
        rows += [ours, ours25, peer]
        print(
            f"[pz] L={L:3d} ours {ours['env_steps_per_s']:9.0f} steps/s (max_cycles 25: "
            f"{ours25['env_steps_per_s']:.0f})  mpe2 {fmt(peer['env_steps_per_s'])}  "
            f"ratio {fmt(ours['ratio_vs_peer'], '.1f', 'x')}",
            flush=True,
        )
    return rows


def peer_reason(cfg: BenchEnvConfig) -> str:
    """Why a peer row is empty."""
    return MISSING if cfg.peers else "peers disabled (--no-peers)"


def ratio(ours: dict, peer: dict) -> float | None:
    """ours / peer agent-steps per second, None when the peer was not measured."""
    if peer.get("agent_steps_per_s") is None:
        return None
    return ours["agent_steps_per_s"] / peer["agent_steps_per_s"]


def fmt(value, spec: str = ".0f", suffix: str = "") -> str:
    """A number for a table, or '-' for None."""
    return "-" if value is None else format(value, spec) + suffix


# --------------------------------------------------------------------------- 2. batched core
def world_stepper(B: int, L: int, device: str, neighbour_grid: bool | None = None):
    """World.step + pairwise rewards on B worlds of L agents with fixed random actions; and the world."""
    gen = torch.Generator().manual_seed(0)
    world = World(B, L, GRID_SIZE, RADIUS, device=device, neighbour_grid=neighbour_grid)
    world.reset(torch.randint(0, GRID_SIZE, (B, L, 2), generator=gen).to(device))
    actions = torch.randint(0, NUM_ACTIONS, (B, L), generator=gen).to(device)  # (B, L)
    labels = torch.zeros(B, L, 0, dtype=torch.long, device=device)
    scenario = make_scenario("pairwise")
    return (lambda: scenario.rewards(world, labels, world.step(actions))), world


def vmas_stepper(vmas, B: int, L: int, device: str):
    """VMAS simple_spread, discrete actions, fixed random actions per agent (PEERS.md section 8);
    returns the step function and the seconds make_env took."""
    t0 = time.perf_counter()
    env = vmas.make_env(
        "simple_spread", num_envs=B, device=device, continuous_actions=False, n_agents=L, seed=0
    )
    make_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    actions = [torch.randint(0, space.n, (B, 1), generator=gen).to(device) for space in env.action_space]
    return (lambda: env.step(actions)), make_s


def batch_row(system: str, B: int, L: int, res: dict) -> dict:
    """One batched row: a call steps B worlds, so env-steps/s = B * calls/s."""
    rate = res["calls_per_s"]
    return {
        "section": "batched",
        "system": system,
        "B": B,
        "L": L,
        "env_steps_per_s": rate * B,
        "agent_steps_per_s": rate * B * L,
        "ms_per_batched_step": 1e3 / rate,
        **res,
    }


def bench_batched(cfg: BenchEnvConfig, vmas_s: dict) -> list[dict]:
    """Section 2: World (+ pairwise rewards) vs VMAS simple_spread, B worlds x L agents.
    ``vmas_s[(B, L)]`` collects VMAS's best seconds per batched step over the passes."""
    vmas = import_peer("vmas") if cfg.peers else None
    rows = []
    for B in cfg.batch_worlds:
        for L in cfg.batch_agents:
            ours_step, world = world_stepper(B, L, cfg.device)
            steps, base = {"ours": ours_step}, {"section": "batched", "system": "vmas", "B": B, "L": L}
            reason = vmas_skip_reason(vmas, B, L, cfg, vmas_s)
            if reason is None:
                steps["vmas"], make_s = vmas_stepper(vmas, B, L, cfg.device)
            res = race(steps, cfg, cfg.device)
            ours = {**batch_row("ours", B, L, res["ours"]), "use_grid": world.use_grid}
            if reason is None:
                peer = {**batch_row("vmas", B, L, res["vmas"]), "make_env_s": make_s}
                vmas_s[B, L] = min(vmas_s.get((B, L), math.inf), 1 / peer["calls_per_s"])
            else:
                peer = skipped(base, reason)
            ours["ratio_vs_peer"] = ratio(ours, peer)
            rows += [ours, peer]
            print(
                f"[batched] B={B:5d} L={L:3d} ours {ours['agent_steps_per_s']:12.0f} agent-steps/s "
                f"({ours['ms_per_batched_step']:.3f} ms)  vmas {fmt(peer['agent_steps_per_s'])}  "
                f"ratio {fmt(ours['ratio_vs_peer'], '.1f', 'x')}",
                flush=True,
            )
    return rows


def vmas_skip_reason(vmas, B: int, L: int, cfg: BenchEnvConfig, vmas_s: dict) -> str | None:
    """Why VMAS is not measured at (B, L): not installed, or predicted too slow; None to measure.
    The prediction scales the best time at the largest smaller L measured at this B by (L/L0)^2."""
    if vmas is None:
        return peer_reason(cfg)
    smaller = [L0 for (B0, L0) in vmas_s if B0 == B and L0 < L]
    if not smaller:
        return None
    L0 = max(smaller)
    s0 = vmas_s[B, L0]
    predicted = s0 * (L / L0) ** 2  # VMAS loops over entity pairs in Python: cost ~ L^2
    if (1 + cfg.repeats) * predicted <= cfg.vmas_max_seconds:
        return None
    return (
        f"predicted {predicted:.1f} s per batched step ({s0:.3f} s measured at L={L0}, x (L/{L0})^2); "
        f"{1 + cfg.repeats} steps would exceed the {cfg.vmas_max_seconds:.0f} s bound"
    )


# ----------------------------------------------------------------------- 3. dense vs grid, B = 1
def bench_scaling(cfg: BenchEnvConfig) -> list[dict]:
    """Section 3: cost per agent-step in one world, dense (B, L, L) test vs neighbour grid."""
    rows = []
    for L in cfg.scaling_agents:
        res = race(
            {
                path: world_stepper(1, L, cfg.device, neighbour_grid=path == "grid")[0]
                for path in ("dense", "grid")
            },
            cfg,
            cfg.device,
            min_calls=2,
        )
        for path, r in res.items():
            rate = r["calls_per_s"]
            rows.append(
                {
                    "section": "scaling",
                    "system": "ours",
                    "path": path,
                    "B": 1,
                    "L": L,
                    "env_steps_per_s": rate,
                    "agent_steps_per_s": rate * L,
                    "us_per_step": 1e6 / rate,
                    "ns_per_agent_step": 1e9 / (rate * L),
                    **r,
                }
            )
        d, g = rows[-2], rows[-1]
        print(
            f"[scaling] L={L:5d} dense {d['us_per_step']:10.1f} us/step  "
            f"grid {g['us_per_step']:10.1f} us/step  "
            f"({d['ns_per_agent_step']:.0f} vs {g['ns_per_agent_step']:.0f} ns/agent-step)",
            flush=True,
        )
    return rows


def crossover(rows: list[dict]) -> dict:
    """Where the grid starts to beat the dense test: the bracketing L values and a log-log
    interpolation of the time ratio dense/grid crossing 1."""
    by_L = {}
    for r in rows:
        by_L.setdefault(r["L"], {})[r["path"]] = r["us_per_step"]
    Ls = sorted(by_L)
    q = {L: by_L[L]["dense"] / by_L[L]["grid"] for L in Ls}  # > 1: grid faster
    first = next((L for L in Ls if q[L] > 1 and all(q[M] > 1 for M in Ls if M >= L)), None)
    out = {"dense_over_grid_time": q, "grid_min_agents_now": GRID_MIN_AGENTS, "first_L_grid_wins": first}
    below = [L for L in Ls if first is not None and L < first]
    if below:
        L0, L1 = below[-1], first
        t = math.log(q[L0]) / (math.log(q[L0]) - math.log(q[L1]))  # where log q crosses 0
        out["interpolated_L"] = round(math.exp(math.log(L0) + t * (math.log(L1) - math.log(L0))))
        out["bracket"] = [L0, L1]
    return out


# ------------------------------------------------------------------------------ report
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info(cfg: BenchEnvConfig) -> dict:
    """Where and with what the numbers were taken."""
    versions = {}
    for dist in ("torch", "numpy", "pettingzoo", "gymnasium", "mpe2", "vmas", "supersuit"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "python": platform.python_version(),
        "versions": versions,
        "device": cfg.device,
        "cuda": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else None,
        "git_commit": commit,
        "loadavg_start": list(os.getloadavg()),
    }


def pick(rows: list[dict], **match) -> dict | None:
    """The first row whose fields equal ``match``."""
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def goals(result: dict) -> dict:
    """The issue's two goals: >= 20x MPE2 at L = 20 (PettingZoo), >= 5x VMAS at L = 10, B = 8192."""
    rows = result["rows"]
    pz = pick(rows, section="pettingzoo", system="ours", L=20, max_cycles=GRID_SIZE)
    bt = pick(rows, section="batched", system="ours", L=10, B=8192)
    return {
        "pettingzoo_L20_vs_mpe2": {"goal": 20, "ratio": pz and pz["ratio_vs_peer"]},
        "batched_L10_B8192_vs_vmas": {"goal": 5, "ratio": bt and bt["ratio_vs_peer"]},
    }


def table(header: list[str], lines: list[list[str]]) -> list[str]:
    """A markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cells) + " |" for cells in lines
    ]


def markdown(result: dict) -> str:
    """The three tables as markdown (a section without rows, such as 1 on CUDA, is left out)."""
    rows, pz, bt = result["rows"], [], []
    for r in rows:
        if r["section"] == "pettingzoo" and r["system"] == "ours" and r["max_cycles"] == GRID_SIZE:
            r25 = pick(rows, section="pettingzoo", system="ours", L=r["L"], max_cycles=25)
            p = pick(rows, section="pettingzoo", system="mpe2", L=r["L"])
            pz.append(
                [
                    str(r["L"]),
                    fmt(r["env_steps_per_s"], ",.0f"),
                    fmt(r25["env_steps_per_s"], ",.0f"),
                    fmt(p["env_steps_per_s"], ",.0f"),
                    fmt(r["agent_steps_per_s"], ",.0f"),
                    fmt(p["agent_steps_per_s"], ",.0f"),
                    fmt(r["ratio_vs_peer"], ".1f", "x"),
                ]
            )
        if r["section"] == "batched" and r["system"] == "ours":
            p = pick(rows, section="batched", system="vmas", B=r["B"], L=r["L"])
            bt.append(
                [
                    f"{r['B']:,}",
                    str(r["L"]),
                    fmt(r["agent_steps_per_s"], ",.0f"),
                    fmt(r["ms_per_batched_step"], ".3f"),
                    f"skipped: {p['skipped']}" if p.get("skipped") else fmt(p["agent_steps_per_s"], ",.0f"),
                    fmt(p.get("ms_per_batched_step"), ".2f"),
                    fmt(r["ratio_vs_peer"], ".1f", "x"),
                ]
            )
    scal = [r for r in rows if r["section"] == "scaling"]
    sc = [
        [
            str(d["L"]),
            fmt(d["us_per_step"], ",.1f"),
            fmt(g["us_per_step"], ",.1f"),
            fmt(d["ns_per_agent_step"], ",.0f"),
            fmt(g["ns_per_agent_step"], ",.0f"),
            fmt(d["us_per_step"] / g["us_per_step"], ".2f"),
        ]
        for d, g in zip(scal[::2], scal[1::2], strict=True)
    ]
    out = []
    if pz:
        header = ["L", "ours env-steps/s", "ours (max_cycles=25)", "MPE2 env-steps/s"]
        out += table(header + ["ours agent-steps/s", "MPE2 agent-steps/s", "ours / MPE2"], pz) + [""]
    out += table(
        ["B", "L", "ours agent-steps/s", "ours ms/step", "VMAS agent-steps/s", "VMAS ms/step", "ours / VMAS"],
        bt,
    )
    out += [""] + table(
        [
            "L",
            "dense us/step",
            "grid us/step",
            "dense ns/agent-step",
            "grid ns/agent-step",
            "dense / grid time",
        ],
        sc,
    )
    return "\n".join(out)


def row_key(row: dict) -> tuple:
    """What a row measures, independent of the pass."""
    return tuple(row.get(k) for k in ("section", "system", "path", "B", "L", "max_cycles"))


def merge_passes(passes: list[list[dict]]) -> list[dict]:
    """One row per measurement: its best measured pass, with every pass's loops kept, and the
    ratios recomputed from the merged rows. A row skipped in every pass stays skipped."""
    merged = {}
    for rows in passes:
        for row in rows:
            key, old = row_key(row), merged.get(row_key(row))
            if old is None or (row.get("calls_per_s") or 0) > (old.get("calls_per_s") or 0):
                keep = row if old is None or row.get("calls_per_s") else old
                runs = (old or {}).get("all_passes_calls_per_s", []) + row.get("runs_calls_per_s", [])
                merged[key] = {**keep, "all_passes_calls_per_s": runs}
            else:
                old["all_passes_calls_per_s"] += row.get("runs_calls_per_s", [])
    rows = list(merged.values())
    for r in rows:
        if r["system"] == "ours" and r["section"] in ("pettingzoo", "batched"):
            peer = "mpe2" if r["section"] == "pettingzoo" else "vmas"
            r["ratio_vs_peer"] = ratio(r, pick(rows, section=r["section"], system=peer, B=r["B"], L=r["L"]))
    return rows


def main(cfg: BenchEnvConfig, command: str | None = None) -> dict:
    """Run the sections, print the tables, file the result (see ``out``, ``readme``, ``merge``)."""
    if cfg.merge is not None:
        entry = json.loads(cfg.merge.read_text()).get("cuda")
        if entry is None:
            raise SystemExit(f'bench_env: {cfg.merge} holds no "cuda" entry to merge')
        return file_result(entry, "cuda", cfg)
    cuda = cfg.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench_env: --device cuda asked for, but torch sees no CUDA device")
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    result = {
        "command": command,
        "machine": machine_info(cfg),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    passes, vmas_s = [], {}
    for k in range(cfg.passes):
        print(f"--- pass {k + 1} of {cfg.passes}", flush=True)
        api = [] if cuda else bench_pettingzoo(cfg)
        passes.append(api + bench_batched(cfg, vmas_s) + bench_scaling(cfg))
    result["rows"] = merge_passes(passes)
    result["crossover"] = crossover([r for r in result["rows"] if r["section"] == "scaling"])
    result["goals"] = goals(result)
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    result["seconds"] = time.perf_counter() - start
    print(markdown(result))
    print(json.dumps({"crossover": result["crossover"], "goals": result["goals"]}, indent=1))
    return file_result(result, "cuda" if cuda else "cpu", cfg)


README_START = '<!-- generated by benchmarks/bench_env.py from the "cuda" entry of results/env.json -->'
README_END = "<!-- end of the generated GPU section -->"


def file_result(result: dict, key: str, cfg: BenchEnvConfig) -> dict:
    """Write `result` into ``cfg.out``: a CPU result is the file's top level (an existing "cuda" entry
    is kept), a CUDA result its "cuda" key (the CPU result is kept). A CUDA result also rewrites the
    README's generated GPU section."""
    if cfg.out is not None:
        old = json.loads(cfg.out.read_text()) if cfg.out.exists() else {}
        if key == "cuda":
            data = {**old, "cuda": result}
        else:
            data = {**result, **({"cuda": old["cuda"]} if "cuda" in old else {})}
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(data, indent=1) + "\n")
    if key == "cuda" and cfg.readme is not None:
        text = cfg.readme.read_text() if cfg.readme.exists() else ""
        if README_START in text:
            text = text[: text.index(README_START)].rstrip("\n")
        cfg.readme.write_text(f"{text}\n\n{gpu_section(result)}\n".lstrip("\n"))
    return result


def gpu_section(result: dict) -> str:
    """The README's generated section for a CUDA result: how it was run, the goals, the tables."""
    m = result["machine"]
    peers = sorted({r["system"] for r in result["rows"] if r["system"] != "ours" and not r.get("skipped")})
    cross = result["crossover"]
    lines = [
        README_START,
        "## On a GPU",
        "",
        f"Command: `{result.get('command') or 'bench_env.main(' + result['config']['device'] + ')'}` "
        f"({result.get('seconds', 0):.0f} s) on {m.get('cuda')}, torch {m['versions'].get('torch')}, "
        f"Python {m['python']}, {m['date_utc'][:10]}. Raw numbers: `benchmarks/results/env.json` under "
        f'"cuda". Peers measured: {", ".join(peers) or "none (not installed there)"}. Section 1, the '
        "PettingZoo API, runs on the CPU by design and is in the tables above.",
        "",
        f"Dense (B, L, L) test against the neighbour grid at B = 1: the grid wins from L = "
        f"{cross.get('first_L_grid_wins')} (interpolated {cross.get('interpolated_L')}); envs/world.py "
        "switches CUDA worlds to the grid from GRID_MIN_AGENTS_BY_DEVICE['cuda'] agents.",
        "",
        markdown(result),
        README_END,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    given = [Path(a).name if "/" in a else a for a in sys.argv[1:]]  # no machine-specific paths
    main(tyro.cli(BenchEnvConfig), " ".join(["python benchmarks/bench_env.py", *given]))
