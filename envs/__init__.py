"""The colliding-agents world (arXiv 2506.06179) and its PettingZoo face.

Importing this package registers ``hyperagents/colliding_agents-v0`` and the MARL task
``hyperagents/crossing-v0`` in PettingZoo's ``"parallel"`` and ``"aec"`` registries::

    import envs, pettingzoo
    env = pettingzoo.make("parallel", "hyperagents/colliding_agents-v0", num_agents=5)
"""

from pettingzoo import aec_registry, parallel_registry, register

from envs.world import DOWN, LEFT, MOVE_RIGHT, RIGHT, STAY, UP, World

ENV_ID = "hyperagents/colliding_agents-v0"
CROSSING_ID = "hyperagents/crossing-v0"

# Re-importing (e.g. importlib.reload) must not warn about overriding our own ids.
for _id, _module in ((ENV_ID, "envs.colliding_agents_v0"), (CROSSING_ID, "envs.crossing_v0")):
    if _id not in parallel_registry:
        register("parallel", _id, entry_point=f"{_module}:parallel_env")
    if _id not in aec_registry:
        register("aec", _id, entry_point=f"{_module}:env")

__all__ = ["ENV_ID", "CROSSING_ID", "World", "STAY", "RIGHT", "LEFT", "UP", "DOWN", "MOVE_RIGHT"]
