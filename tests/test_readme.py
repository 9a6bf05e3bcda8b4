"""The README's code runs as written: its Python blocks are executed, and every `hyperagents ...`
command it shows (in code blocks and inline) parses: the command and each flag exist and every
value has the right type. Parsing runs nothing, so no command trains here."""

import re
import shlex
from pathlib import Path

import pytest

from training import cli

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)


def commands() -> list[list[str]]:
    """Every `hyperagents <command> ...` in the README, as argv lists (without the program name)."""
    text = re.sub(r"\\\n\s*", " ", TEXT)  # join continued shell lines
    snippets = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL) + re.findall(r"`([^`\n]+)`", text)
    found = []
    for snippet in snippets:
        for line in snippet.splitlines():
            line = line.split(" #", 1)[0]
            for part in re.split(r"&&|\|\||;|\|", line):
                words = shlex.split(part)
                if len(words) >= 2 and words[0] == "hyperagents" and not words[1].startswith("<"):
                    found.append(words[1:])
    return found


COMMANDS = commands()


def test_the_readme_shows_python_and_commands():
    assert len(PYTHON_BLOCKS) >= 2 and len(COMMANDS) >= 6
    assert {argv[0] for argv in COMMANDS} >= {"demo", "fit", "train", "ood", "view", "lm"}


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"python{k}" for k in range(len(PYTHON_BLOCKS))])
def test_python_block_runs(code):
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_command_parses(argv, capsys):
    try:
        cfg = cli.parse(argv)
    except SystemExit as exit_:  # tyro's answer to an unknown command, flag or value
        err = capsys.readouterr().err
        pytest.fail(f"`hyperagents {' '.join(argv)}` does not parse (exit {exit_.code}): {err}")
    assert type(cfg) is cli.COMMANDS[argv[0]][0]
