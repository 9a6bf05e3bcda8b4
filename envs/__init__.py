"""The colliding-agents world (arXiv 2506.06179) and its PettingZoo face.

Importing this package registers ``hyperagents/colliding_agents-v0`` in PettingZoo's
``"parallel"`` and ``"aec"`` registries::

    import envs, pettingzoo
    env = pettingzoo.make("parallel", "hyperagents/colliding_agents-v0", num_agents=5)
"""

from pettingzoo import aec_registry, parallel_registry, register

from envs.world import DOWN, LEFT, MOVE_RIGHT, RIGHT, STAY, UP, World

ENV_ID = "hyperagents/colliding_agents-v0"

# Re-importing (e.g. importlib.reload) must not warn about overriding our own ids.
if ENV_ID not in parallel_registry:
    register("parallel", ENV_ID, entry_point="envs.colliding_agents_v0:parallel_env")
if ENV_ID not in aec_registry:
    register("aec", ENV_ID, entry_point="envs.colliding_agents_v0:env")

__all__ = ["ENV_ID", "World", "STAY", "RIGHT", "LEFT", "UP", "DOWN", "MOVE_RIGHT"]
