"""Record one episode of a trained crossing run as a GIF: the task its run was trained on, any count.

The predator-prey task is drawn in the scenario's colours (hunters sweeping up, hunters heading
right, prey); a ring marks an agent that has touched another, and the status line gives the
learners' mean return so far. The run plays argmax actions on the
starts ``hyperagents ood`` draws for that count (``--seed``), so the GIF shows an episode of the
evaluation tables.

    python benchmarks/crossing_gif.py runs/pp/sa_7_0 --num-agents 48 --out docs/figures/predator_prey.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v2 as imageio
import torch

from envs.crossing import Crossing
from envs.render import Renderer
from training import ood


def frames(run: str, num_agents: int, seed: int, every: int) -> list:
    """(H, W, 3) frames of one episode of ``run`` at ``num_agents`` agents, every ``every`` steps."""
    (loaded,) = ood.load_runs((run,))
    env = Crossing(num_worlds=1, num_agents=num_agents, **loaded["task"])
    env.seed(seed + 1000 * num_agents)  # the starts of hyperagents ood at this count
    env.reset()
    actor = ood.policy_actor(loaded["model"], True, 512, loaded["features"])
    labels, scenario = env.scenario_labels()
    renderer = Renderer(env.N, env.R, mode="rgb_array")
    total = torch.zeros(1, env.L)

    def draw():  # the status line's mean return is the learners' (predator-prey: the prey's)
        return renderer.draw(env.world, labels=labels, scenario=scenario, returns=total[0, env.learners[0]])

    out = [draw()]
    while not env.done.all():
        total += env.step(actor(env))
        if int(env.steps[0]) % every == 0:
            out.append(draw())
    renderer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a hyperagents train run folder")
    parser.add_argument("--num-agents", type=int, default=32)
    parser.add_argument("--seed", type=int, default=ood.OODConfig.seed, help="ood's start seed")
    parser.add_argument("--every", type=int, default=1, help="keep one frame in this many steps")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--out", type=Path, required=True, help="the .gif to write")
    args = parser.parse_args()
    shots = frames(args.run, args.num_agents, args.seed, args.every)
    imageio.mimsave(args.out, shots, duration=1000 / args.fps, loop=0)
    print(f"wrote {args.out} ({len(shots)} frames)")


if __name__ == "__main__":
    main()
