"""Entry points: each is ``main(cfg)`` with a tyro dataclass config; ``hyperagents`` dispatches."""
