"""``hyperagents <command>``: one console script, one tyro config per command."""

from __future__ import annotations

import tyro

from training import demo, fit, lm, marl, ood
from viz import viewer

COMMANDS = {
    "demo": (demo.DemoConfig, demo.main),
    "fit": (fit.FitConfig, fit.main),
    "train": (marl.TrainConfig, marl.main),
    "ood": (ood.OODConfig, ood.main),
    "lm": (lm.LMTrainConfig, lm.main),
    "view": (viewer.ViewConfig, viewer.main),
}


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: sys.argv) into a command's config and run it."""
    cfg = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in COMMANDS.items()}, args=argv, description=__doc__
    )
    for cls, run in COMMANDS.values():
        if isinstance(cfg, cls):
            run(cfg)
            return


if __name__ == "__main__":
    main()
