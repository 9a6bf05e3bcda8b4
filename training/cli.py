"""``hyperagents <command>``: one console script, one tyro config per command.

``hyperagents train --preset NAME`` parses the rest of the command line over that recipe's
settings (``training/marl.py`` PRESETS), and ``--backend sb3`` or ``--backend rllib`` over that
backend's own defaults (``BACKEND_DEFAULTS``): a flag given sets its field, in any position.

Bad input never ends in a traceback: a flag tyro cannot parse (an unknown option, a value of the
wrong type or outside a choice), a ValueError, TypeError or FileNotFoundError from a command,
or settings too large for this machine's memory, print one line, ``hyperagents <command>: error:
...``, and exit with status 2; a run folder that
cannot be used now (busy, no valid checkpoint) or an optional engine that is not installed (Ray
RLlib for ``hyperagents rllib``) exits with status 1, and Ctrl-C with status 130
(training commands first write a checkpoint; see training/runs.py). Set HYPERAGENTS_DEBUG=1 to get
the traceback instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys

import tyro

from training import demo, fit, lm, marl, marl_rllib, marl_vmas, ood, view
from training.runs import RunError

COMMANDS = {
    "demo": (demo.DemoConfig, demo.main),
    "fit": (fit.FitConfig, fit.main),
    "train": (marl.TrainConfig, marl.main),
    "rllib": (marl_rllib.RLlibConfig, marl_rllib.main),
    "vmas": (marl_vmas.VmasConfig, marl_vmas.main),
    "ood": (ood.OODConfig, ood.main),
    "lm": (lm.LMTrainConfig, lm.main),
    "view": (view.ViewConfig, view.main),
}


def out_of_memory(err: BaseException) -> str | None:
    """One line for an allocation that failed (settings too large for this machine), else None.

    torch reports a failed CPU allocation as a RuntimeError with the size asked for, a failed CUDA
    one as torch.OutOfMemoryError; numpy raises MemoryError."""
    text = str(err)
    if isinstance(err, RuntimeError) and not (
        "can't allocate memory" in text or type(err).__name__ == "OutOfMemoryError"
    ):
        return None
    size = re.search(r"allocate (\d+) bytes", text)
    what = f"an allocation of {int(size.group(1)) / 2**30:.1f} GiB failed" if size else first_line(err)
    return f"not enough memory ({what}); use fewer worlds or agents, or smaller batches"


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value of the last ``flag`` in ``argv`` (``--flag VALUE`` or ``--flag=VALUE``), or None:
    the one the parser keeps."""
    value = None
    for k, arg in enumerate(argv):
        if arg == flag and k + 1 < len(argv):
            value = argv[k + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def box_message(text: str) -> str:
    """tyro's usage-error box as one line: its message sections, without the box, the argument's
    help text and the pointer to --help."""
    sections, lines = [], []
    for raw in text.splitlines()[1:]:  # the first line is the box's title bar
        line = raw.strip().strip("│╭╮╰╯").strip()
        if not line or set(line) <= set("─-"):  # a rule between sections (ASCII off a terminal)
            sections.append(" ".join(lines))
            lines = []
        else:
            lines.append(line)
    sections.append(" ".join(lines))
    keep = [s for s in sections if s and not s.startswith(("Argument helptext", "For full helptext"))]
    return re.sub(r"\s+", " ", "; ".join(keep)).strip() or text.strip().splitlines()[0]


def tyro_parse(command: str, call):
    """``call()``, a tyro parse; a usage error, which tyro draws as a box of many lines, becomes one
    line on stderr and exit status 2, as every other bad input does. --help passes through."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            cfg = call()
    except SystemExit as exit_:
        if exit_.code in (0, None) or not captured.getvalue().strip():
            sys.stderr.write(captured.getvalue())
            raise
        prog = "hyperagents" if command == "hyperagents" else f"hyperagents {command}"
        print(f"{prog}: error: {box_message(captured.getvalue())} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2) from None
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    sys.stderr.write(captured.getvalue())  # anything tyro wrote on a good parse (warnings)
    return cfg


def parse(argv: list[str] | None) -> object:
    """The config of the command ``argv`` names; a train preset or backend sets the defaults of the
    other flags (``marl.preset_config``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "train":
        preset, backend = flag_value(args[1:], "--preset"), flag_value(args[1:], "--backend")
        if preset is not None or backend is not None:
            return parse_train(args[1:], preset, backend)
    command = args[0] if args and args[0] in COMMANDS else "hyperagents"
    return tyro_parse(
        command,
        lambda: tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, (cls, _) in COMMANDS.items()}, args=args, description=__doc__
        ),
    )


def parse_train(args: list[str], preset: str | None, backend: str | None) -> marl.TrainConfig:
    """``hyperagents train ARGS`` parsed over the defaults of ``preset`` and ``backend``."""
    try:
        default = marl.preset_config(preset, **({} if backend is None else {"backend": backend}))
    except ValueError as err:
        print(f"hyperagents train: error: {first_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    return tyro_parse(
        "train", lambda: tyro.cli(marl.TrainConfig, default=default, args=args, prog="hyperagents train")
    )


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: sys.argv) into a command's config and run it."""
    cfg = parse(argv)
    name = next(name for name, (cls, _) in COMMANDS.items() if isinstance(cfg, cls))
    try:
        COMMANDS[name][1](cfg)
    except (ValueError, TypeError, FileNotFoundError, RunError, ImportError) as err:
        if os.environ.get("HYPERAGENTS_DEBUG"):
            raise
        print(f"hyperagents {name}: error: {first_line(err)}", file=sys.stderr)
        # 2: bad input; 1: the input is fine but the run folder or an optional engine is not there
        raise SystemExit(1 if isinstance(err, (RunError, ImportError)) else 2) from None
    except (MemoryError, RuntimeError) as err:
        reason = out_of_memory(err)
        if reason is None or os.environ.get("HYPERAGENTS_DEBUG"):
            raise
        print(f"hyperagents {name}: error: {reason}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # outside a run's checkpoint-safe loop, or a second Ctrl-C
        print(f"hyperagents {name}: interrupted; nothing saved since the last checkpoint", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
