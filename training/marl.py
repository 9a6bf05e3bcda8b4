"""``hyperagents train``: shared-parameter PPO with attention policies on the crossing task.

Three engines share this config and run folder. With no flags it trains the project's best recipe
per CPU minute, ``--backend torchrl`` (docs/torchrl.md): the whole loop on ``--device`` (CPU or
CUDA), batched worlds, rollout, GAE and clipped PPO from TorchRL, one attention encoder shared by
actor and critic, L = 2..24 drawn with P(L) ∝ 1/L (every count the same share of samples) and self
+ 7 nearest in view, 64 worlds, 8M agent-steps, the learning rate decaying over the run and the
entropy bonus to a floor of 0.001, each new contact costing 4 in the training reward (the task's 1
is half of what a contact costs the team), and each step a quarter of the agents sampling their
moves while the rest play the argmax (``training/marl_torchrl.py``). ``--backend sb3`` is one
SB3 ``PPO`` over :class:`envs.vec.CrossingVecEnv` (one slot per agent) with a features extractor
from ``policies/actor_critic.py`` (SA, HFA, HA, or the nearest-k MLP baseline); it alone has the
DAgger warm start. ``--backend rllib`` trains through Ray RLlib, on a local Ray or a cluster
(``training/marl_rllib.py``, docs/rllib.md). The sb3 and rllib backends keep their own defaults
(``BACKEND_DEFAULTS``: 8 agents, 32 worlds, every agent in view, 1M steps, constant learning rate
and entropy bonus, the task's own reward) for every field not given, so ``--backend sb3`` alone
trains the SB3 path's own recipe and resumes its runs; ``preset_config()`` builds a config the same
way in Python.

A run lives in ``runs/<name>/`` (see ``training/runs.py``): ``config.json`` (the manifest),
``metrics.json``, TensorBoard events and the last two checkpoints (``checkpoint<ext>``,
``checkpoint.prev<ext>``), written every ``checkpoint_every`` steps at a rollout boundary, at the
end and on Ctrl-C. Running the same command again resumes from the checkpoint and trains only
the missing steps, so an interrupted run loses none of the steps it learned from, and its return
history and training time carry over. A rerun may change only ``TRAIN_MAY_CHANGE``; anything
else is refused in one line that names the fields and the flags that would resume the stored
run (for a run of another backend: ``--backend <it>``), or needs another ``--run-name`` or
``--overwrite``. Evaluate at other agent counts with ``hyperagents ood``.

``--backend sb3 --imitate-iterations K`` first clones a scripted avoider (``--imitate-expert``,
default greedy) with K DAgger rounds (``training/imitate.py``; actor and critic), then PPO
fine-tunes from there; the clone is kept as ``warm_start.zip``. Use a small PPO learning rate
after a warm start (docs/marl.md uses 1e-4 decaying to 1e-5): at the default 1e-3 the first
updates undo much of the clone.

Example::

    hyperagents train                                    # the torchrl recipe on the CPU
    hyperagents train --preset gpu                       # the same on one GPU, 4096 worlds, bf16
    hyperagents train --backend sb3 --family hfa --total-timesteps 1000000 --run-name hfa_s0
    # docs/marl.md's recipe (SB3: the cautious teacher on crowds and on PPO's counts, touch features)
    hyperagents train --preset best --run-name sa_touch_s0
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from tqdm import tqdm

from envs.checks import check_device, check_int, check_real, parse_count
from envs.crossing import (
    FEATURE_SETS,
    PARKED_FEATURE,
    Crossing,
    check_contact_charge,
    check_contact_cost,
    check_count_power,
    check_features,
    check_lateral_cost,
    check_predator_prey,
    check_start_width_low,
    check_two_way,
)
from envs.vec import CrossingVecEnv
from policies.actor_critic import FAMILIES, AttentionExtractor, NearestMLPExtractor
from policies.base import check_choice
from training import runs
from training.imitate import EXPERTS, WEIGHTINGS, imitate
from training.runs import Run

ALL_FAMILIES = (*FAMILIES, "mlp")
BACKENDS = ("sb3", "torchrl", "rllib")

# The sb3 and rllib backends' defaults where they differ from the field defaults (the torchrl
# recipe): the settings their runs, docs and measurements were made with. The torchrl recipe was
# tuned for the shared encoder and never measured on them, so neither gets it unasked.
SB3_DEFAULTS = dict(
    num_agents=(8, 8),
    count_power=0.0,
    total_timesteps=1_000_000,
    num_worlds=32,
    neighbours=None,
    critic="central",
    learning_rate_final=None,
    ent_coef_final=None,
    contact_cost=1.0,
    sample_fraction=1.0,
)
BACKEND_DEFAULTS = {"torchrl": {}, "sb3": SB3_DEFAULTS, "rllib": SB3_DEFAULTS}
# Task options for training only, with the task's own value (what evaluation always uses).
TRAINING_ONLY = {"start_width_low": None, "contact_cost": 1.0, "lateral_cost": 0.0, "contact_charge": "both"}

# Recipes people use, by name: `hyperagents train --preset NAME` takes these as its defaults, and
# any flag given sets its field over them. "best" is docs/marl.md's recipe (the best policies so
# far: a DAgger warm start from the cautious avoider on crowds and on PPO's counts, then PPO with a
# small step, touch features); "scratch-cpu" is the torchrl recipe of the field defaults, spelled
# out so that it stays the same over another --backend, and "gpu" the same on CUDA; "sb3" is the
# SB3 path at its own defaults (what --backend sb3 alone gives, in a run folder of its own name).
PRESETS = {
    "best": dict(
        backend="sb3",
        features="touch",
        num_agents=(2, 16),
        neighbours=7,
        imitate_iterations=16,
        imitate_epochs=8,
        imitate_expert="cautious",
        imitate_num_agents=(2, 32),
        imitate_mixed=True,
        total_timesteps=1_500_000,
        learning_rate=1e-4,
        learning_rate_final=1e-5,
        ent_coef=0.0,
        n_steps=96,
        batch_size=4096,
        clip_range=0.1,
    ),
    # 4096 worlds x 16 steps: about 590k samples an iteration, 36 minibatches an epoch.
    "gpu": dict(backend="torchrl", device="cuda", num_worlds=4096, batch_size=16384, n_steps=16),
    "scratch-cpu": dict(backend="torchrl", num_worlds=64, batch_size=1024, n_steps=32),
    "sb3": dict(backend="sb3", **SB3_DEFAULTS),
}
for _name in ("gpu", "scratch-cpu"):  # the torchrl recipe's shared settings
    PRESETS[_name] |= dict(num_agents=(2, 24), count_power=1.0, neighbours=7, critic="shared")
    PRESETS[_name] |= dict(
        learning_rate=1e-3, learning_rate_final=1e-4, ent_coef_final=0.001, contact_cost=4.0
    )
PRESETS["scratch-cpu"] |= dict(sample_fraction=0.25, total_timesteps=8_000_000)
# The GPU recipe trains on every sample, as its throughput rows were measured; sampling a quarter
# of the moves has been measured on the CPU only.
PRESETS["gpu"] |= dict(precision="bf16", sample_fraction=1.0, total_timesteps=6_000_000)


@dataclass
class TrainConfig:
    """Train a shared-parameter PPO policy on the crossing task.

    The defaults are the torchrl recipe (the scratch-cpu preset); --backend sb3 or rllib alone
    gives that backend's own defaults instead. In Python, build a config with preset_config(), as
    the command line does: TrainConfig(...) itself takes every field not given from the defaults
    below, whatever the backend.
    """

    preset: Literal["best", "gpu", "scratch-cpu", "sb3"] | None = None
    """a recipe's settings as the defaults of every other flag (flags given still set their field):
    best (docs/marl.md's recipe, SB3 + DAgger), gpu (torchrl on CUDA, 4096 worlds), scratch-cpu
    (torchrl on the CPU, 64 worlds: the defaults), sb3 (the SB3 path at its defaults); see PRESETS
    in training/marl.py. In Python: preset_config()"""

    # Engine
    backend: Literal["sb3", "torchrl", "rllib"] = "torchrl"
    """torchrl: batched MAPPO/IPPO with the whole loop (worlds, rollout, update) on --device
    (training/marl_torchrl.py), the recipe measured best per CPU minute; sb3: SB3 PPO on the CPU
    through a VecEnv (the DAgger warm start); rllib: Ray RLlib's multi-agent PPO over the
    PettingZoo face, local or on a cluster (training/marl_rllib.py). sb3 and rllib keep their own
    defaults for every field not given (BACKEND_DEFAULTS: --num-agents 8 8, --count-power 0,
    --num-worlds 32, --neighbours None, --critic central, --total-timesteps 1000000, constant
    learning rate and entropy bonus), so --backend sb3 alone trains and resumes the SB3 path's
    runs; a preset's settings go over them"""
    num_env_runners: int | None = None
    """rllib backend: processes sampling episodes (None: 2; 0: the driver samples)"""
    address: str | None = None
    """rllib backend: an existing Ray cluster to join ("auto", "ray://head:10001"; None: a local Ray)"""
    device: str = "cpu"
    """torchrl backend: cpu, cuda or cuda:<index>"""
    critic: Literal["central", "local", "shared"] = "shared"
    """torchrl backend: central (MAPPO: the critic attends over every agent), local (IPPO: its own
    encoder sees what the actor sees) or shared (one encoder, the actor's, feeds both heads)"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """torchrl backend: bf16 autocasts the attention encoders (heads, losses and weights stay fp32)"""
    cuda_graphs: bool = False
    """torchrl backend on CUDA: replay each full PPO minibatch step (forward, backward, Adam) as one
    CUDA graph, removing the per-kernel launch cost that bounds the update on a GPU"""
    compile: bool = False
    """torchrl backend: compile each full PPO minibatch's forward and backward with torch.compile,
    fusing the encoder's many small elementwise kernels (the first full minibatch pays the compile,
    tens of seconds); with --cuda-graphs the compiled step is what the graph replays"""

    # Policy
    family: Literal["sa", "hfa", "ha", "mlp"] = "sa"
    """attention family of the features extractor (mlp: nearest-k MLP baseline)"""
    width: int = 32
    """embedding width d"""
    blocks: int = 2
    """attention blocks"""
    heads: int = 2
    """attention heads H"""
    kind: Literal["softmax", "linear"] = "softmax"
    """attention kind"""
    neighbours: int | None = 7
    """attention sees self + this many nearest agents (None: all agents)"""
    neighbour_dx_weight: float = 1.0
    """neighbours are ranked by sqrt((w dx)^2 + dy^2); w < 1 favours agents in nearby lanes"""
    lane_tokens: int = 0
    """attention also sees this many parked agents nearest in lane (|dy|), however far ahead: who
    blocks the lanes at the far wall (needs --neighbours)"""
    mlp_k: int = 6
    """nearest agents in the MLP baseline's fixed-size observation"""
    net_arch: tuple[int, ...] = (64,)
    """hidden layers of the actor and critic heads after the extractor"""

    # Task
    num_agents: tuple[int, int] = (2, 24)
    """agents per world, a (low, high) range sampled per world at each reset"""
    count_power: float = 1.0
    """a world's count L is drawn with probability proportional to L^-count_power: 0 uniform over
    worlds (big worlds then yield most agent samples), 1 the same share of samples per count, 2 the
    same share per doubling of L (see envs/crossing.py)"""
    num_worlds: int = 64
    """worlds B stepped together; SB3 sees B * high env slots"""
    grid_size: int = 64
    """grid side N"""
    radius: int = 1
    """agent radius R"""
    max_steps: int = 96
    """episode length T"""
    start_width: int = 16
    """starts have x uniform in [0, start_width)"""
    start_width_low: int | None = None
    """if set, each training episode's start width is drawn per world in [start_width_low,
    start_width]: denser starts, the crowding of larger counts with few agents (evaluation keeps
    start_width)"""
    contact_cost: float = 4.0
    """training reward per new contact (evaluation uses the task's 1): 2 charges each agent its
    partner's loss too, the contact's whole cost to the team; 3 and 4 also lean towards waiting in
    crowds (docs/torchrl.md; see envs/crossing.py)"""
    lateral_cost: float = 0.0
    """training reward per UP or DOWN move on top of the step cost (evaluation uses the task's 0):
    staying becomes the cheaper way to wait than sliding along a queue, though trained policies
    did not take it up (docs/torchrl.md; see envs/crossing.py)"""
    contact_charge: Literal["both", "mover", "behind", "yield"] = "both"
    """who pays for a contact in training (evaluation uses the task's "both"): "mover" charges only
    the partners that moved in that step, so staying is never charged; "behind" only the partner
    further back in priority's order; "yield" whoever broke the convention of yielding to the agents
    ahead (see envs/crossing.py)"""
    features: Literal["base", "touch", "time", "heading", "labels"] = "base"
    """observation feature set: "base" (offsets, velocities, flags), "touch" (base plus, per
    neighbour, whether each action would touch it now or after its next move right), "time" (base
    plus the fraction of the episode left) or "heading" (base plus the label 1 for a neighbour
    heading the viewer's way, -1 for one coming at it: --two-way's) or "labels" (base plus
    --predator-prey's labels: hunter, hunter moving up); see envs/crossing.py"""
    two_way: bool = False
    """two-way traffic: the odd agents start at the right wall and head left, each acting and
    seeing in its own frame, with the label of --features heading to tell who comes at whom (ood
    plays a run on its own task); see envs/crossing.py"""
    predator_prey: bool = False
    """the predator-prey task (torchrl backend): the odd agents are hunters on the scenario's scripted
    moves (sweeping up, or right to the wall) and the even agents learn to cross without touching
    them, with --features labels to tell hunters from prey (ood plays a run on its own task); see
    envs/crossing.py"""

    # Run
    total_timesteps: int = 8_000_000
    """agent-steps to train for (SB3 timesteps: one per env slot per step)"""
    seed: int = 0
    """seed of PPO (torch, numpy) and of the task's start configurations"""
    run_name: str | None = None
    """run directory name under runs_dir (default crossing__<family>__<seed>)"""
    runs_dir: str = "runs"
    """parent directory of runs"""
    checkpoint_every: int = 100_000
    """write runs/<name>/checkpoint.zip every this many timesteps"""
    threads: int = 1
    """torch CPU threads"""
    progress: bool = True
    """show a progress bar"""
    overwrite: bool = False
    """wipe the run folder and start again, whatever it held"""

    # PPO
    learning_rate: float = 1e-3
    """Adam learning rate"""
    n_steps: int = 32
    """steps per env slot per rollout"""
    batch_size: int = 1024
    """minibatch size"""
    n_epochs: int = 4
    """epochs per rollout"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_range: float = 0.2
    """PPO clip range"""
    sample_fraction: float = 0.25
    """torchrl backend: each step an agent samples its action with this probability and otherwise
    plays the policy's argmax, as at evaluation; only the sampled steps train. Below 1 a learner
    meets neighbours that mostly play as they will at evaluation, not their exploration noise
    (which taught crowds to sidestep), and the update reads that share of the samples. 1: every
    agent samples (plain PPO; the sb3 and rllib backends)"""
    team_spirit: float = 0.0
    """torchrl backend: each agent trains on (1 - s) x its own reward + s x its world's mean reward
    over the agents that learn. Above 0 an agent is paid for the others' progress too, so waiting
    for one further along can pay; 0: selfish agents (the task's rewards)"""
    advantage_norm: Literal["batch", "count"] = "batch"
    """torchrl backend: advantages scaled to unit std over the whole batch, or within each agent
    count, so that the small worlds' advantages are not dwarfed by the crowds'"""
    ent_coef: float = 0.003
    """entropy bonus (at the start of training when ent_coef_final is set)"""
    ent_coef_final: float | None = 0.001
    """if set, the entropy bonus decays linearly from ent_coef to this at total_timesteps, so the
    sampled policy sharpens and its argmax keeps the avoidance it learned (a small floor rather
    than 0 keeps the small counts' avoidance at contact cost 4)"""
    learning_rate_final: float | None = 1e-4
    """if set, the learning rate decays linearly from learning_rate to this at total_timesteps"""
    vf_coef: float = 0.5
    """value loss weight"""

    # Warm start
    imitate_iterations: int = 0
    """DAgger rounds cloning the greedy avoider before PPO starts (0: PPO from scratch); see
    training/imitate.py. Done once, before the first checkpoint, so a resumed run skips it"""
    imitate_epochs: int = 4
    """epochs over the aggregated DAgger data per round"""
    imitate_learning_rate: float = 1e-3
    """Adam learning rate of the DAgger fits (PPO then uses learning_rate)"""
    imitate_num_agents: tuple[int, int] | None = None
    """agent-count range of the DAgger worlds (default: num_agents). Wider than PPO's range lets
    the clone see crowds while PPO's samples stay at the counts it is tuned for: a range of
    counts gives every world's agents a sample each, so crowds dominate PPO's batches"""
    imitate_mixed: bool = False
    """with imitate_num_agents set: every DAgger round also plays a batch of worlds at num_agents,
    so worlds of PPO's counts keep their share of the samples next to the crowds"""
    imitate_expert: Literal["greedy", "cautious", "priority"] = "greedy"
    """the scripted policy DAgger clones: "greedy" (lane-seeking avoider), "cautious" (greedy
    that stays when nothing is safe) or "priority" (prioritised planner that never collides, also
    in crowds); see envs/experts.py"""
    imitate_weighting: Literal["agent", "world"] = "agent"
    """DAgger cross-entropy weighting: "agent" (every sample 1) or "world" (every world the same
    total weight, so crowded worlds do not outvote near-empty ones); see training/imitate.py"""
    imitate_avoid_weight: float = 1.0
    """weight of DAgger samples whose expert action is not RIGHT (sidesteps and waits: the rare
    decisions that avoid collisions); 1: plain DAgger"""

    @property
    def name(self) -> str:
        preset = f"_{self.preset}" if self.preset else ""
        return self.run_name or f"crossing{preset}__{self.family}__{self.seed}"


def preset_config(preset: str | None = None, **fields) -> TrainConfig:
    """The TrainConfig of ``preset`` (a key of PRESETS, or None for none) with ``fields`` over it,
    as ``hyperagents train`` builds it. Last wins: the field defaults, the backend's defaults
    (BACKEND_DEFAULTS; the backend of ``fields``, else the preset's), the preset, ``fields``."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    recipe = PRESETS[preset] if preset else {}
    backend = fields.get("backend", recipe.get("backend", TrainConfig.backend))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return TrainConfig(**{**BACKEND_DEFAULTS[backend], **recipe, "preset": preset, **fields})


def check_task(cfg: TrainConfig) -> None:
    """The task's fields: features, two-way and predator-prey settings the task can honour."""
    check_features(cfg.features)
    shape = (cfg.start_width, cfg.grid_size, cfg.radius)
    check_two_way(cfg.two_way, cfg.features, *shape)
    check_predator_prey(cfg.predator_prey, cfg.two_way, cfg.features, *shape)
    if cfg.predator_prey and cfg.backend != "torchrl":  # SB3's rollout buffer has no per-agent mask
        raise ValueError(f"predator_prey needs backend 'torchrl', got {cfg.backend!r}")


def check_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the bad field."""
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {cfg.preset!r}")
    if cfg.family not in ALL_FAMILIES:
        raise ValueError(f"family must be one of {ALL_FAMILIES}, got {cfg.family!r}")
    parse_count(tuple(cfg.num_agents), "num_agents")
    check_count_power(cfg.count_power)
    check_task(cfg)
    runs.validate_name(cfg.name, "run_name")
    if cfg.imitate_num_agents is not None:
        parse_count(tuple(cfg.imitate_num_agents), "imitate_num_agents")
    elif cfg.imitate_mixed:
        raise ValueError("imitate_mixed needs imitate_num_agents (the second range of DAgger worlds)")
    positive = ("width", "blocks", "heads", "num_worlds", "total_timesteps", "n_steps", "batch_size")
    positive += ("n_epochs", "checkpoint_every", "threads", "mlp_k", "imitate_epochs")
    minimum = dict.fromkeys(positive, 1) | {"imitate_iterations": 0, "lane_tokens": 0}
    for name, lo in minimum.items():
        check_int(name, getattr(cfg, name), lo)
    check_ppo_numbers(cfg)
    if cfg.lane_tokens and (cfg.neighbours is None or cfg.family == "mlp"):
        raise ValueError(
            "lane_tokens must be 0 unless an attention family has --neighbours (else all are in view)"
        )
    if not cfg.imitate_learning_rate > 0:  # also catches NaN
        raise ValueError(f"imitate_learning_rate must be > 0, got {cfg.imitate_learning_rate!r}")
    if cfg.imitate_expert not in EXPERTS:
        raise ValueError(f"imitate_expert must be one of {EXPERTS}, got {cfg.imitate_expert!r}")
    if cfg.imitate_weighting not in WEIGHTINGS:
        raise ValueError(f"imitate_weighting must be one of {WEIGHTINGS}, got {cfg.imitate_weighting!r}")
    if not cfg.imitate_avoid_weight > 0:  # also catches NaN
        raise ValueError(f"imitate_avoid_weight must be > 0, got {cfg.imitate_avoid_weight!r}")
    check_engine(cfg)
    check_training_task(cfg)
    check_rllib_options(cfg)


def check_engine(cfg: TrainConfig) -> None:
    """The backend and the options only some backends or devices honour."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {cfg.backend!r}")
    check_choice("critic", cfg.critic, ("central", "local", "shared"))
    check_choice("precision", cfg.precision, ("fp32", "bf16"))
    if cfg.backend != "sb3" and cfg.imitate_iterations:
        raise ValueError(
            f"imitate_iterations (the DAgger warm start) needs --backend sb3; {cfg.backend} learns "
            "from scratch"
        )
    if cfg.backend != "torchrl" and cfg.device != "cpu":
        raise ValueError(
            f"device={cfg.device!r} needs --backend torchrl (the {cfg.backend} backend runs on the CPU)"
        )
    if cfg.cuda_graphs and not (cfg.backend == "torchrl" and cfg.device.startswith("cuda")):
        raise ValueError(
            f"cuda_graphs needs --backend torchrl with --device cuda (got backend={cfg.backend!r}, "
            f"device={cfg.device!r})"
        )
    if cfg.compile and cfg.backend != "torchrl":
        raise ValueError(f"compile needs --backend torchrl (got backend={cfg.backend!r})")
    check_choice("advantage_norm", cfg.advantage_norm, ("batch", "count"))
    if cfg.advantage_norm != "batch" and cfg.backend != "torchrl":
        raise ValueError(f"advantage_norm needs --backend torchrl (got backend={cfg.backend!r})")
    for name, selfish in (("sample_fraction", 1.0), ("team_spirit", 0.0)):
        if getattr(cfg, name) != selfish and cfg.backend != "torchrl":
            raise ValueError(f"{name} needs --backend torchrl (got backend={cfg.backend!r})")


# (field, low, high, low excluded): PPO's numbers and the view's, checked before any env is built
PPO_NUMBERS = (
    ("learning_rate", 0.0, math.inf, True),
    ("learning_rate_final", 0.0, math.inf, False),
    ("gamma", 0.0, 1.0, False),
    ("gae_lambda", 0.0, 1.0, False),
    ("clip_range", 0.0, math.inf, True),
    ("ent_coef", 0.0, math.inf, False),
    ("ent_coef_final", 0.0, math.inf, False),
    ("vf_coef", 0.0, math.inf, False),
    ("neighbour_dx_weight", 0.0, math.inf, True),
    ("sample_fraction", 0.0, 1.0, True),
    ("team_spirit", 0.0, 1.0, False),
)


def check_ppo_numbers(cfg: TrainConfig) -> None:
    """The real-valued settings in range (None where a field allows it), and the view's cap."""
    for name, low, high, open_low in PPO_NUMBERS:
        value = getattr(cfg, name)
        if value is None and name.endswith("_final"):  # no schedule: the value stays constant
            continue
        check_real(name, value, low, high, open_low=open_low)
    if cfg.neighbours is not None:
        check_int("neighbours", cfg.neighbours, 1)


def check_training_task(cfg: TrainConfig) -> None:
    """The options that change only the training task (evaluation keeps the task's own)."""
    check_start_width_low(cfg.start_width_low, cfg.start_width)
    check_contact_cost(cfg.contact_cost)
    check_lateral_cost(cfg.lateral_cost)
    check_contact_charge(cfg.contact_charge)
    for name, task_value in TRAINING_ONLY.items():
        if cfg.backend == "rllib" and getattr(cfg, name) != task_value:
            raise ValueError(f"{name} needs --backend torchrl or sb3 (the rllib env keeps the task's)")


def check_rllib_options(cfg: TrainConfig) -> None:
    """The rllib backend's own flags, and the torchrl-only one it cannot honour."""
    if cfg.backend != "rllib":
        for name in ("num_env_runners", "address"):
            if getattr(cfg, name) is not None:
                raise ValueError(f"{name} needs --backend rllib (Ray's env runners and cluster)")
        return
    if cfg.num_env_runners is not None:
        check_int("num_env_runners", cfg.num_env_runners, 0)
    if cfg.address is not None and not (isinstance(cfg.address, str) and cfg.address.strip()):
        raise ValueError(
            f"address must be a Ray address such as 'auto' or 'ray://head:10001', got {cfg.address!r}"
        )
    if cfg.precision != "fp32":
        raise ValueError(
            f"precision={cfg.precision!r} needs --backend torchrl (the rllib backend trains in fp32)"
        )
    from training.marl_rllib import iteration_env_steps  # imports no Ray

    if cfg.batch_size > (steps := iteration_env_steps(cfg)):
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be <= n_steps x num_worlds ({steps}, worlds rounded up "
            "to a multiple of the env runners): RLlib checks the minibatch against the env steps"
        )


def policy_kwargs(cfg: TrainConfig) -> dict:
    """SB3 ``policy_kwargs`` for the configured extractor; valid for observations of any L."""
    if cfg.family == "mlp":
        extractor, kwargs = (
            NearestMLPExtractor,
            dict(num_features=FEATURE_SETS[cfg.features], k=cfg.mlp_k, width=2 * cfg.width),
        )
    else:
        extractor = AttentionExtractor
        kwargs = dict(
            num_features=FEATURE_SETS[cfg.features],
            family=cfg.family,
            width=cfg.width,
            blocks=cfg.blocks,
            heads=cfg.heads,
            kind=cfg.kind,
            neighbours=cfg.neighbours,
            dx_weight=cfg.neighbour_dx_weight,
            lane_tokens=cfg.lane_tokens,
            flag_feature=PARKED_FEATURE,
        )
    return dict(
        features_extractor_class=extractor, features_extractor_kwargs=kwargs, net_arch=list(cfg.net_arch)
    )


def task_kwargs(cfg: TrainConfig) -> dict:
    """The task's keyword arguments in ``cfg`` (shared by the VecEnv and the warm start's task)."""
    keys = ("num_worlds", "grid_size", "radius", "max_steps", "start_width", "features", "count_power")
    # passed only where they differ from the task's own, so a default task is built as before
    extra = {k: getattr(cfg, k) for k, v in TRAINING_ONLY.items() if getattr(cfg, k) != v}
    tasks = {k: True for k in ("two_way", "predator_prey") if getattr(cfg, k)}
    return {"num_agents": tuple(cfg.num_agents), **{k: getattr(cfg, k) for k in keys}, **extra, **tasks}


def make_task(cfg: TrainConfig, seed: int | None = None, num_agents=None) -> Crossing:
    """The batched task of ``cfg`` (what the training VecEnv wraps), optionally at other counts."""
    counts = {} if num_agents is None else {"num_agents": tuple(num_agents)}
    return Crossing(**(task_kwargs(cfg) | counts), seed=seed)


def make_env(cfg: TrainConfig, seed: int | None = None) -> CrossingVecEnv:
    """The training VecEnv of ``cfg``."""
    return CrossingVecEnv(**task_kwargs(cfg), seed=seed)


def linear(start: float, end: float, fraction: float) -> float:
    """start + (end - start) * fraction, fraction clipped to [0, 1]."""
    return start + (end - start) * min(max(fraction, 0.0), 1.0)


def learning_rate(cfg: TrainConfig):
    """SB3 learning rate: a float, or a schedule of progress_remaining (1 at the start, 0 at the end)."""
    if cfg.learning_rate_final is None:
        return cfg.learning_rate
    start, end = cfg.learning_rate, cfg.learning_rate_final
    return lambda remaining: linear(start, end, 1.0 - remaining)


# Settings a rerun may change: more timesteps, checkpoint cadence, and how it runs.
TRAIN_MAY_CHANGE = (
    "total_timesteps",
    "device",
    "precision",
    "cuda_graphs",
    "compile",
    "num_env_runners",  # how many processes sample, and where Ray runs
    "address",
    "checkpoint_every",
    "threads",
    "progress",
    "overwrite",
    "run_name",
    "runs_dir",
    "preset",  # a name for settings the manifest holds one by one, and compares one by one
)


def predated_defaults(cfg: TrainConfig) -> dict:
    """What a stored run made before one of the fields existed behaved like: every field was
    added with the SB3 path's value (the sb3 preset's)."""
    return runs.field_defaults(cfg) | runs.normalise(PRESETS["sb3"])


def given_fields(cfg: TrainConfig) -> dict:
    """The fields of ``cfg`` that differ from what its preset and backend give: the flags passed."""
    base = runs.normalise(asdict(preset_config(cfg.preset, backend=cfg.backend)))
    return {k: v for k, v in asdict(cfg).items() if runs.normalise(v) != base[k]}


def as_flag(name: str, value) -> str:
    """The ``hyperagents train`` flag that sets field ``name`` to the JSON ``value``."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    if isinstance(value, list):
        return " ".join([flag, *map(str, value)])
    return f"{flag} {value}"


def resume_flags(stored: dict, cfg: TrainConfig) -> str:
    """The flags that turn ``cfg``'s command into the one of the ``stored`` manifest, as a hint
    for the refused resume: ``--backend <its backend>`` (which brings that backend's defaults)
    and every field it still differs in; '' when flags cannot make the two match."""
    backend = stored.get("backend", "sb3")
    if stored.get("command", "train") != "train" or backend not in BACKENDS:
        return ""
    given = {k: v for k, v in given_fields(cfg).items() if k != "backend"}
    like = runs.make_manifest("train", preset_config(cfg.preset, **given, backend=backend))
    defaults = predated_defaults(cfg)
    diff = runs.manifest_diff(stored, like, TRAIN_MAY_CHANGE, defaults)
    if not set(diff) <= set(like):  # a field this version no longer has
        return ""
    flags = [f"--backend {backend}"] if backend != cfg.backend else []
    return " ".join(flags + [as_flag(k, stored.get(k, defaults.get(k))) for k in diff])


def open_train_run(cfg: TrainConfig, suffix: str = ".zip") -> Run:
    """The run folder of ``cfg`` (see training/runs.py): refused, in one line naming the fields and
    the flags that would resume it, when it holds another run."""
    return runs.open_run(
        cfg.runs_dir,
        cfg.name,
        runs.make_manifest("train", cfg),
        may_change=TRAIN_MAY_CHANGE,
        overwrite=cfg.overwrite,
        suffix=suffix,
        defaults=predated_defaults(cfg),
        name_flag="run-name",
        resume_flags=lambda stored: resume_flags(stored, cfg),
    )


class RunCallback(BaseCallback):
    """Progress bar, return history, checkpoints at rollout boundaries, and the stop on Ctrl-C.

    ``learned`` is the timestep count at the start of the current rollout: the steps whose
    updates the policy holds (a rollout cut short is never learned from).
    """

    def __init__(self, run: Run, every: int, total: int, progress: bool, entropy, history, seconds):
        super().__init__()
        self.run, self.every, self.total, self.progress = run, every, total, progress
        self.entropy = entropy  # (start, end) of a linear entropy-bonus schedule, or None
        self.history: list[list] = history  # [timesteps, mean episode return] rows, resumed ones first
        self.seconds_before, self.start = seconds, time.perf_counter()
        self.bar = None
        self.last_saved = self.learned = 0
        self.flushed = len(history)

    def seconds(self) -> float:
        """Training seconds of the whole run: earlier processes' (to their checkpoint) plus this one's."""
        return self.seconds_before + time.perf_counter() - self.start

    def save(self) -> float:
        """Checkpoint the model with the run's history and seconds; returns those seconds."""
        step = int(self.model.num_timesteps)
        state = {"seconds": self.seconds(), "history": self.history}
        self.run.save_checkpoint(self.model.save, step, state)
        self.run.append_history("return_history", self.history[self.flushed :])
        self.flushed, self.last_saved = len(self.history), step
        return state["seconds"]

    def _on_training_start(self) -> None:
        self.last_saved = self.learned = self.num_timesteps
        if self.progress:
            self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", dynamic_ncols=True)

    def _on_rollout_start(self) -> None:
        # Called after the previous rollout was learned from: num_timesteps counts learned steps only.
        self.learned = self.num_timesteps
        if self.num_timesteps - self.last_saved >= self.every:
            self.save()
        if self.entropy is not None:  # a function of learned steps only, so resuming continues it
            self.model.ent_coef = linear(*self.entropy, self.num_timesteps / self.total)

    def _on_rollout_end(self) -> None:
        buf = self.model.ep_info_buffer
        if buf:
            value = float(np.mean([ep["r"] for ep in buf]))
            self.history.append([int(self.num_timesteps), value])
            if self.bar is not None:
                self.bar.set_postfix(ep_return=f"{value:.3f}")

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.model.n_envs)
        return not self.run.stop_requested

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def new_model(cfg: TrainConfig, run: Run) -> PPO:
    """A fresh PPO of ``cfg`` on its training VecEnv."""
    return PPO(
        "MlpPolicy",
        make_env(cfg),
        learning_rate=learning_rate(cfg),
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        policy_kwargs=policy_kwargs(cfg),
        tensorboard_log=str(run.path),
        seed=cfg.seed,
        device="cpu",
        verbose=0,
    )


def warm_start(cfg: TrainConfig, model: PPO, run: Run) -> None:
    """DAgger rounds cloning the scripted expert, then the first checkpoint and warm_start.zip."""
    start = time.perf_counter()
    stats = imitate(
        model.policy,
        [
            make_task(cfg, seed=cfg.seed, num_agents=cfg.imitate_num_agents),
            *([make_task(cfg, seed=cfg.seed)] if cfg.imitate_mixed else []),
        ],
        cfg.imitate_iterations,
        epochs=cfg.imitate_epochs,
        batch_size=cfg.batch_size,
        gamma=cfg.gamma,
        vf_coef=cfg.vf_coef,
        learning_rate=cfg.imitate_learning_rate,
        seed=cfg.seed,
        expert=cfg.imitate_expert,
        weighting=cfg.imitate_weighting,
        avoid_weight=cfg.imitate_avoid_weight,
    )
    runs.write_json({**asdict(stats), "seconds": time.perf_counter() - start}, run.path / "imitation.json")
    run.save_checkpoint(model.save, 0, {"seconds": 0.0, "history": []})  # never redone on resume
    runs.write_atomic(model.save, run.path / "warm_start.zip")  # kept: evaluate the clone before PPO


def main(cfg: TrainConfig, callbacks: list[BaseCallback] | None = None) -> dict:
    """Train (or resume) the run of ``cfg``; returns the metrics also written to metrics.json.

    ``callbacks`` are extra SB3 callbacks (a test stops training early with one).
    """
    check_config(cfg)
    if cfg.backend == "torchrl":
        from training import marl_torchrl  # torchrl loads only for its backend

        device = check_device(cfg.device)
        with open_train_run(cfg, suffix=".pt") as run:
            metrics = marl_torchrl.train_run(cfg, run, device)
    elif cfg.backend == "rllib":
        from training import marl_rllib  # Ray loads only for its backend

        marl_rllib.require_ray()  # before the run folder is made
        with open_train_run(cfg, suffix=".tar") as run:
            metrics = marl_rllib.train_run(cfg, run)
    else:
        with open_train_run(cfg) as run:
            metrics = train_sb3(cfg, run, callbacks)
    print(runs.outputs_line(run.path))
    return metrics


def train_sb3(cfg: TrainConfig, run: Run, callbacks: list[BaseCallback] | None = None) -> dict:
    """PPO on an open run: resume from its checkpoint, learn the missing steps, merge the metrics."""
    torch.set_num_threads(cfg.threads)
    old = run.read_metrics()
    if run.resumed:
        model = PPO.load(run.checkpoint.path, device="cpu", tensorboard_log=str(run.path))
        # A fresh env stream for the resumed part, reproducible from (seed, steps done).
        model.set_env(make_env(cfg, seed=cfg.seed + model.num_timesteps))
        resumed_from = int(model.num_timesteps)
        state = run.checkpoint.state
        if "history" not in state:  # a checkpoint made before they carried their own history
            state = {
                "seconds": old.get("train_seconds", 0.0),
                "history": [h for h in old.get("return_history", []) if h[0] <= resumed_from],
            }
    else:
        model, resumed_from, state = new_model(cfg, run), 0, {"seconds": 0.0, "history": []}
        if cfg.imitate_iterations:
            warm_start(cfg, model, run)
    remaining = cfg.total_timesteps - model.num_timesteps
    entropy = None if cfg.ent_coef_final is None else (cfg.ent_coef, cfg.ent_coef_final)
    history = [list(h) for h in state["history"]]
    run_cb = RunCallback(
        run, cfg.checkpoint_every, cfg.total_timesteps, cfg.progress, entropy, history, state["seconds"]
    )
    if remaining > 0:
        model.learn(
            remaining,
            callback=CallbackList([run_cb, *(callbacks or [])]),
            tb_log_name="tb",
            reset_num_timesteps=resumed_from == 0,
        )
        if run.stop_requested:
            model.num_timesteps = run_cb.learned  # the cut rollout was never learned from
            run_cb.save()
            run.exit_interrupted(run_cb.learned)
    finished = model.num_timesteps >= cfg.total_timesteps
    # The metrics report the seconds the final checkpoint holds, so a rerun reports the same.
    seconds = state["seconds"] if remaining <= 0 else run_cb.save() if finished else run_cb.seconds()
    warm = run.path / "imitation.json"
    metrics = {
        "num_timesteps": int(model.num_timesteps),
        "finished": finished,
        "checkpoint_timesteps": int(model.num_timesteps) if finished else run_cb.last_saved,
        "resumed_from": resumed_from,
        "train_seconds": seconds,
        "steps_per_second": model.num_timesteps / seconds if seconds > 0 else old.get("steps_per_second"),
        "final_ep_return": history[-1][1] if history else None,
        "return_history": history,
        "checkpoint": str(run.path / f"checkpoint{run.suffix}"),
        "imitation": json.loads(warm.read_text()) if warm.exists() else None,
    }
    return run.update_metrics(metrics)
