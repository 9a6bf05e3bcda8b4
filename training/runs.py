"""The run folder every training command shares: manifest, lock, checkpoints, metrics, interrupts.

A run lives in ``<runs_dir>/<name>/`` and never lies about what it holds:

- ``config.json``: the manifest, what defines the run (the command, every setting, package
  versions). A command that opens an existing run is compared with it *before anything is
  written*; a difference outside the command's ``may_change`` fields stops with a one-line
  ``ValueError`` naming the fields (and, given ``resume_flags``, the flags that would resume
  the stored run); a field the stored run predates compares with its default (``defaults``).
  ``overwrite=True`` wipes the folder and starts again.
- ``.lock``: an exclusive ``flock`` held while a process works on the run; a second process
  gets a one-line :class:`RunError` instead of a mixed folder.
- ``checkpoint<ext>`` and ``checkpoint.prev<ext>``: the last two checkpoints, and
  ``checkpoints.json`` with each one's step, sha256 and a small JSON ``state``. Loading verifies
  the digest; a corrupt or truncated latest checkpoint falls back to the previous one with a
  warning, and none valid is a one-line :class:`RunError`.
- ``metrics.json``: every figure the run reports, merged key by key (never rebuilt), so keys
  other commands wrote (``ood_*``) survive a rerun.
- Every file is written to a temp file unique to the process (pid + random suffix) and moved
  into place with ``os.replace``: a kill at any moment leaves the previous version intact.

Public API (a trainer polls ``run.stop_requested`` once per step or rollout)::

    manifest = make_manifest("fit", cfg, extra_field=...)      # dict: command, fields, versions
    with open_run(runs_dir, name, manifest, may_change=("steps", ...), overwrite=False,
                  suffix=".pt", defaults=field_defaults(cfg), name_flag="name") as run:
        run.path                      # Path of the folder
        run.resumed                   # True when a valid checkpoint was found
        run.checkpoint                # Checkpoint(path, step, sha256, state) | None (the verified latest)
        run.load_torch()              # torch.load of run.checkpoint, or None
        run.save_checkpoint(write, step, state=None)   # write(tmp_path) writes the file (SB3: model.save)
        run.save_torch(obj, step, state=None)
        run.update_metrics({...})     # merge top-level keys into metrics.json; returns the whole dict
        run.append_history(key, rows) # rows [[step, ...], ...]; stored rows from rows[0][0] on are replaced
        stop = run.stop_requested     # SIGINT / SIGTERM arrived (a second one aborts at once); read
        if due or stop: ...save...    # it once per step, so a stop always follows a save
        if stop: run.exit_interrupted(step)   # one line on stderr, SystemExit(130)
        run.checkpoint_or_stop(step, every, save)   # the three lines above, for a save() of `step`
        run.saved_step                # the latest checkpoint's step (0 before the first)

    validate_name(name, flag)         # ValueError for '', '.', '..', separators, absolute paths
    read_manifest(folder, renamed=None) -> dict | None;  find_checkpoint(folder) -> Checkpoint | None
    open_run(..., renamed={"lr": "learning_rate"})   # a stored manifest's old field names read as new
    open_run(..., resume_flags=lambda stored: "--seed 0")   # named in the refusal of another run
    merge_metrics(folder, updates) -> dict   # what update_metrics does, for evaluators such as ood
    outputs_line(folder) -> str      # "outputs: runs/x/ (config.json, ...)": every command's last line
    write_json(obj, path); write_atomic(write, path); save_torch(obj, path); load_torch(path)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

INDEX = "checkpoints.json"
LOCK = ".lock"
METRICS_LOCK = ".metrics.lock"  # short, blocking: the trainer and `ood` both merge into metrics.json
UNCOMPARED = ("versions", "changes")  # recorded in the manifest, never a reason to refuse a resume
PACKAGES = ("hyperagents", "torch", "numpy", "gymnasium", "pettingzoo", "stable-baselines3", "torchrl")
MISSING = "<missing>"


class RunError(RuntimeError):
    """A run folder that cannot be used now: busy, or holding no valid checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint file; ``step`` is None for a file written before checkpoints were indexed."""

    path: Path
    step: int | None
    sha256: str | None
    state: dict


# ---------------------------------------------------------------- files


def tmp_path(path: Path) -> Path:
    """A temp name beside ``path``, unique to this process, keeping its suffix (SB3 appends '.zip')."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")


def write_atomic(write: Callable[[Path], None], path: str | os.PathLike) -> Path:
    """Call ``write(tmp)``, flush it to disk and move it to ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (dataclasses are converted, other objects written as str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, indent=2, default=str)
    return write_atomic(lambda p: p.write_text(text), path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save ``obj`` to ``path`` atomically."""
    return write_atomic(lambda p: torch.save(obj, p), path)


def load_torch(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`save_torch` (our own files: full unpickling is fine)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing; a file that does not parse is a RunError."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{path} is not valid JSON ({err}); pass --overwrite to start the run again") from None


# ---------------------------------------------------------------- names and manifests


def validate_name(name: Any, flag: str = "name") -> str:
    """The run name, or a ValueError naming ``flag``: one folder name, never a path."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{flag} must be a non-empty folder name, got {name!r}")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise ValueError(f"{flag} must be one folder name (no '/', not '.' or '..'), got {name!r}")
    return name


def versions() -> dict[str, str]:
    """Versions of Python and of the installed packages a run depends on."""
    out = {"python": sys.version.split()[0]}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


def make_manifest(command: str, cfg: Any, **extra: Any) -> dict:
    """The manifest of a dataclass config: command, every field, ``extra`` (derived facts), versions."""
    fields = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return normalise({"command": command, **fields, **extra, "versions": versions()})


def field_defaults(cfg: Any) -> dict:
    """A dataclass's field defaults: what a run made before a field existed behaved like."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return normalise(out)


def normalise(obj: Any) -> Any:
    """As JSON would give it back (tuples become lists), so stored and new manifests compare."""
    return json.loads(json.dumps(obj, default=str))


def read_manifest(folder: str | os.PathLike, renamed: Mapping[str, str] | None = None) -> dict | None:
    """The stored manifest, with the fields named in ``renamed`` (old name -> new) under their new names."""
    return rename_fields(read_json(Path(folder) / "config.json"), renamed)


def rename_fields(manifest: dict | None, renamed: Mapping[str, str] | None) -> dict | None:
    """``manifest`` with each old field name of ``renamed`` replaced by its new one (a run made
    before a flag was renamed then compares, resumes and loads like one made after)."""
    if not manifest or not renamed:
        return manifest
    return {renamed.get(k, k): v for k, v in manifest.items() if renamed.get(k) not in manifest}


def manifest_diff(old: Mapping, new: Mapping, may_change: Iterable[str] = (), defaults=None) -> list[str]:
    """Fields, other than ``may_change``, where ``new`` differs from the stored ``old``.

    A field ``old`` lacks (the run predates it) is compared with its default in ``defaults``.
    """
    defaults = defaults or {}
    skip = set(may_change) | set(UNCOMPARED)
    if "command" not in old:  # written before manifests named their command
        skip.add("command")
    keys = sorted((set(old) | set(new)) - skip)
    return [k for k in keys if old.get(k, defaults.get(k, MISSING)) != new.get(k, MISSING)]


def short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def refusal(path: Path, stored: Mapping, new: Mapping, diff: list[str], name_flag: str, flags: str) -> str:
    """The one-line refusal of a command that differs from the stored run in the fields ``diff``:
    the first few with both values, every other one by name, and what to do instead."""
    shown = ", ".join(
        f"{k} {short(stored.get(k, MISSING))} -> {short(new.get(k, MISSING))}" for k in diff[:4]
    )
    more = f" (+{len(diff) - 4} more: {', '.join(diff[4:])})" if len(diff) > 4 else ""
    resume = f"pass {flags} to resume it, another --{name_flag}" if flags else f"pass another --{name_flag}"
    return (
        f"run folder {path} holds a different run ({shown}{more}); {resume} to start a new run, "
        "or --overwrite to replace this one"
    )


# ---------------------------------------------------------------- checkpoints (read-only)


def candidates(folder: Path) -> list[Path]:
    """The checkpoint files present: checkpoint<ext> first, then checkpoint.prev<ext>."""
    files = [p for p in folder.glob("checkpoint.*") if p.is_file() and p.name != INDEX]
    return sorted(files, key=lambda p: (".prev" in p.name, p.name))


def find_checkpoint(folder: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint whose sha256 matches the index; warns when it is not the latest one.

    None when the folder has no checkpoint; RunError when it has some and none is valid. A folder
    without an index (a run made before checkpoints were indexed) gives its checkpoint unverified.
    """
    folder = Path(folder)
    index = read_json(folder / INDEX)
    files = candidates(folder)
    if index is None:
        return Checkpoint(files[0], None, None, {}) if files else None
    entries = index.get("checkpoints", [])
    digests: dict[Path, str] = {}
    for k, entry in enumerate(entries):
        for path in files:
            if path not in digests:
                digests[path] = sha256(path)
            if digests[path] == entry["sha256"]:
                if k > 0:
                    warnings.warn(
                        f"the latest checkpoint of {folder} (step {entries[0]['step']}) is missing or "
                        f"corrupt; resuming from the previous one (step {entry['step']})",
                        stacklevel=2,
                    )
                return Checkpoint(path, entry["step"], entry["sha256"], entry.get("state") or {})
    if not entries:
        return None
    raise RunError(
        f"no valid checkpoint in {folder}: every checkpoint file is missing or fails its sha256; "
        "pass --overwrite to start the run again"
    )


# ---------------------------------------------------------------- metrics


@contextlib.contextmanager
def flocked(path: Path, blocking: bool = True):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge_metrics(folder: str | os.PathLike, updates: Mapping) -> dict:
    """Merge ``updates`` into ``folder/metrics.json`` key by key; returns the merged metrics."""
    folder = Path(folder)
    with flocked(folder / METRICS_LOCK):
        metrics = read_json(folder / "metrics.json") or {}
        metrics.update(normalise(dict(updates)))
        write_json(metrics, folder / "metrics.json")
    return metrics


def outputs_line(folder: str | os.PathLike, names: Iterable[str] | None = None) -> str:
    """``outputs: <folder>/ (<files>)``: where a command left its outputs, for its last printed line.

    ``names`` defaults to what the folder holds (hidden files left out, TensorBoard event files
    counted as one entry, sub-folders with a trailing '/').
    """
    folder = Path(folder)
    if names is None:
        names, events = [], False
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            if p.name.startswith("."):
                continue
            if p.name.startswith("events.out.tfevents"):
                events = True
                continue
            names.append(p.name + ("/" if p.is_dir() else ""))
        names += ["TensorBoard events"] if events else []
    return f"outputs: {folder}/ ({', '.join(names)})"


# ---------------------------------------------------------------- the run


class Run:
    """An open run folder (made by :func:`open_run`); a context manager that releases it."""

    def __init__(self, path: Path, lock, suffix: str, command: str, resumed_from: Checkpoint | None):
        self.path, self._lock, self.suffix, self.command = path, lock, suffix, command
        self.checkpoint = resumed_from
        self.stop_requested: str | None = None  # the signal's name once SIGINT or SIGTERM arrived
        self._handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._handlers[sig] = signal.signal(sig, self._on_signal)

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None

    @property
    def saved_step(self) -> int:
        """The step of the latest checkpoint: the resumed one's until this process saves (0: none)."""
        return (self.checkpoint.step or 0) if self.checkpoint is not None else 0

    def checkpoint_or_stop(self, step: int, every: int, save: Callable[[], Any]) -> None:
        """Where a trainer may stop (after an iteration, ``step`` steps learned): ``save()`` (which
        checkpoints ``step``) once ``every`` steps have passed since the last checkpoint or a stop
        was requested, then, on a stop, report it and exit (:meth:`exit_interrupted`)."""
        stop = self.stop_requested  # read once: a signal arriving during save() waits for the next call
        if stop or step - self.saved_step >= every:
            save()
        if stop:
            self.exit_interrupted(step)

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:  # a second signal: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.stop_requested = signal.Signals(signum).name

    def exit_interrupted(self, step: int) -> None:
        """Report the stop in one line on stderr and exit with status 130 (call after saving)."""
        print(
            f"hyperagents {self.command}: stopped by {self.stop_requested}; checkpoint at step {step} "
            f"saved in {self.path}; run the same command again to resume",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130)

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, write: Callable[[Path], None], step: int, state: dict | None = None) -> Path:
        """Write a checkpoint with ``write(path)``; the previous valid one is kept as checkpoint.prev."""
        latest = self.path / f"checkpoint{self.suffix}"
        previous = self.path / f"checkpoint.prev{self.suffix}"
        tmp = tmp_path(latest)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            digest = sha256(tmp)
            keep = self.checkpoint
            if keep is not None and keep.path == latest:
                os.replace(latest, previous)
                keep = dataclasses.replace(keep, path=previous, sha256=keep.sha256 or sha256(previous))
            elif keep is not None and keep.path != previous:
                keep = None  # a file of another name (never written here): not ours to rotate
            os.replace(tmp, latest)
        finally:
            tmp.unlink(missing_ok=True)
        new = Checkpoint(latest, int(step), digest, normalise(state or {}))
        entries = [new, *([keep] if keep is not None else [])]
        index = [dict(file=c.path.name, step=c.step, sha256=c.sha256, state=c.state) for c in entries]
        write_json({"checkpoints": index}, self.path / INDEX)
        self.checkpoint = new
        return latest

    def save_torch(self, obj: Any, step: int, state: dict | None = None) -> Path:
        return self.save_checkpoint(lambda p: torch.save(obj, p), step, state)

    def load_torch(self) -> Any:
        return None if self.checkpoint is None else load_torch(self.checkpoint.path)

    # ------------------------------------------------------------ metrics
    def read_metrics(self) -> dict:
        return read_json(self.path / "metrics.json") or {}

    def update_metrics(self, updates: Mapping) -> dict:
        return merge_metrics(self.path, updates)

    def append_history(self, key: str, rows: list) -> dict:
        """Append ``rows`` ([step, ...] each) to the list ``metrics[key]``.

        Stored rows at or after the first new row's step are replaced: a resumed run redoes the
        steps after its checkpoint, and they must not be counted twice.
        """
        if not rows:
            return self.read_metrics()
        first = rows[0][0]
        with flocked(self.path / METRICS_LOCK):
            metrics = read_json(self.path / "metrics.json") or {}
            kept = [r for r in metrics.get(key, []) if r[0] < first]
            metrics[key] = kept + normalise(list(rows))
            write_json(metrics, self.path / "metrics.json")
        return metrics

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers = {}
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def acquire(path: Path, flag: str):
    """The run folder's lock file, locked; RunError when another process holds it."""
    lock = open(path / LOCK, "a+")  # noqa: SIM115 (held until Run.close)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise RunError(
            f"run folder {path} is in use by another process (pid {holder}); wait for it to finish "
            f"or pass another --{flag}"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def wipe(path: Path) -> None:
    """Remove everything in the run folder except its lock file."""
    for child in path.iterdir():
        if child.name == LOCK:
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def open_run(
    runs_dir: str | os.PathLike,
    name: str,
    manifest: dict,
    *,
    may_change: Iterable[str] = (),
    overwrite: bool = False,
    suffix: str = ".pt",
    defaults: Mapping | None = None,
    name_flag: str = "name",
    renamed: Mapping[str, str] | None = None,
    resume_flags: Callable[[dict], str] | None = None,
) -> Run:
    """Open (create, resume or, with ``overwrite``, restart) the run ``runs_dir/name``.

    Order: validate the name, lock the folder, compare the manifest with the stored one, find the
    verified checkpoint; only then is config.json written. Raises ValueError (bad name, different
    run) or RunError (folder busy, no valid checkpoint), writing nothing to an existing run.
    ``renamed`` (old field name -> new) reads a stored manifest's old names as the new ones.
    ``resume_flags(stored)`` gives the flags that would make the command match a stored run it
    differs from ('' if none do), for the refusal's message.
    """
    path = Path(runs_dir) / validate_name(name, name_flag)
    path.mkdir(parents=True, exist_ok=True)
    lock = acquire(path, name_flag)
    try:
        manifest = normalise(manifest)
        stored = None if overwrite else read_manifest(path, renamed)
        has_work = bool(candidates(path)) or (path / "metrics.json").exists()
        if overwrite or (stored is None and not has_work):
            wipe(path)
        elif stored is None:
            raise RunError(
                f"run folder {path} has results but no config.json; pass another --{name_flag} or --overwrite"
            )
        changes = {}
        if stored is not None:
            diff = manifest_diff(stored, manifest, may_change, defaults)
            if diff and has_work:
                flags = resume_flags(stored) if resume_flags is not None else ""
                shown = {**(defaults or {}), **stored}  # a field the run predates: the value it had
                raise ValueError(refusal(path, shown, manifest, diff, name_flag, flags))
            if diff:  # an attempt that never reached a checkpoint or a metric: nothing to keep
                wipe(path)
                stored = None
            else:
                keys = set(stored) | set(manifest)
                changes = {k: [stored.get(k), manifest.get(k)] for k in sorted(keys - {"changes"})}
                changes = {k: v for k, v in changes.items() if v[0] != v[1]}
        checkpoint = find_checkpoint(path)
        for stale in path.glob(".checkpoint*.tmp*"):  # left by a killed process: we hold the lock
            stale.unlink(missing_ok=True)
        history = (stored or {}).get("changes", []) + ([changes] if changes else [])
        write_json({**manifest, **({"changes": history} if history else {})}, path / "config.json")
    except BaseException:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        raise
    return Run(path, lock, suffix, manifest.get("command", "run"), checkpoint)
