"""Errors and config checks shared by the model definitions."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from typing import Any, Mapping


class UnsupportedConfigError(ValueError):
    """A Hugging Face config asks for a feature this implementation does not have.

    The message names the config field and its value, so a user knows what to change
    (or what to implement) instead of getting silently different math.
    """


def diffusers_config_kwargs(cls, cfg: Mapping[str, Any], fixed: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Constructor kwargs of the config dataclass ``cls`` from a diffusers ``config.json`` dict.

    Private keys (``_class_name``, ``_diffusers_version``) are skipped. A key in ``fixed`` must hold
    exactly that value (``None`` meaning absent/None): the feature it selects is not implemented.
    Any other key must be a field of ``cls``. Lists become (nested) tuples so configs hash.
    Raises UnsupportedConfigError naming the field and value.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, val in cfg.items():
        if key.startswith("_"):
            continue
        if key in fixed:
            want = fixed[key]
            if not (val is None if want is None else val == want):
                raise UnsupportedConfigError(f"{what}: {key}={val!r} is not supported (only {want!r})")
            continue
        if key not in known:
            raise UnsupportedConfigError(f"{what}: unknown field {key}={val!r}")
        if isinstance(val, list):
            val = tuple(tuple(v) if isinstance(v, list) else v for v in val)
        kwargs[key] = val
    return kwargs


# ----------------------------------------------------------------------------- command lines
class UsageError(Exception):
    """Bad command-line input. ``cli_main`` prints ``error: <message>`` (one line) and exits 2."""


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite. Raised by the training loops (``ka.gka.train_stage``,
    ``ka.tka.train``); the main job re-raises it naming the stage and subject (exit status 1),
    keeping every finished stage."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (a :class:`UsageError`, exit 2 under
    :func:`cli_main`) instead of usage text plus a message, with a ``--debug`` flag (tracebacks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Values with units may be negative ("--delay-spread -3ns", "--snr -2.5dB"): let them reach
        # the argument's parser (which names the problem) instead of being taken for options.
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*[a-zA-Zµμ]*$")
        self.add_argument("--debug", action="store_true",
                          help="show the full traceback of an error instead of one line")

    def error(self, message):
        raise UsageError(message)


def arg_type(parse, what: str = ""):
    """An argparse ``type=`` from a parser that raises ValueError: its message reaches the user
    (argparse would otherwise print only 'invalid <function name> value')."""
    def f(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    f.__name__ = what or getattr(parse, "__name__", "value")
    return f


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[0]


def cli_main(main, argv=None) -> int:
    """Run ``main(argv) -> int | None`` as a command: returns the exit status.

    A :class:`UsageError` prints ``error: <message>`` to stderr (one line) and gives 2; any other
    exception prints ``error: <type>: <message> (run with --debug for the traceback)`` and gives
    1. With ``--debug`` in ``argv`` exceptions propagate with their traceback. ``SystemExit``
    (``--help``) passes through. Use as ``sys.exit(cli_main(main))``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        rc = main(argv)
    except UsageError as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a command reports every failure in one line
        if debug:
            raise
        print(f"error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0 if rc is None else int(rc)


def _created_dirs(path: str) -> list:
    """The directories ``os.makedirs(path)`` would create, outermost first."""
    out, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        out.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return out[::-1]


def prepare_output_dir(path: str, what: str = "output folder") -> list:
    """Create ``path`` if needed and prove it writable (create and remove a probe file), before
    any work. Returns the directories created (for :func:`remove_if_empty`). Raises
    :class:`UsageError` naming the path when it is a file, lies under a file, or is not
    writable; anything created by the attempt is removed again."""
    if not path:
        raise UsageError(f"{what} is empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} exists and is not a folder")
    created = _created_dirs(path)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_probe_{os.getpid()}")
        with open(probe, "w") as fh:
            fh.write("")
        os.remove(probe)
    except OSError as e:
        remove_if_empty(created)
        raise UsageError(f"{what} {path!r} cannot be written: {e.strerror or e}") from None
    return created


def remove_if_empty(created: list) -> None:
    """Remove the directories of :func:`prepare_output_dir` that are still empty (innermost
    first), so a failed command leaves no empty output folder behind."""
    for d in reversed(created):
        if not os.path.isdir(d):
            continue
        try:
            os.rmdir(d)  # only succeeds if empty
        except OSError:
            break


def parse_config_flags(argv, *, prog: str, what: str, example: str, define=None, usage: str = "",
                       doc: str = ""):
    """Parse ``--config FILE[:variant]`` with ``--config.FIELD=VALUE`` overrides (ml_collections)
    plus the flags ``define(flags, fv)`` adds, validating before any work.

    Returns ``(flag_values, config, config_path)``. Raises :class:`UsageError` (one line) for a
    missing ``--config``, a config file that does not exist, an unknown flag or override, or a
    config whose ``get_config`` rejects its argument. ``--help`` prints ``usage``, ``doc`` and the
    flags, then exits 0. ``argv`` excludes the program name.
    """
    from absl import flags
    from ml_collections import config_flags

    argv = list(argv)
    fv = flags.FlagValues()
    # sys_argv: config_flags finds the --config.FIELD overrides there (default: sys.argv, which is
    # not what main(argv) was given when called from Python).
    config_flag = config_flags.DEFINE_config_file("config", None, f"{what} (python file with get_config())",
                                                  flag_values=fv, sys_argv=[prog] + argv)
    flags.DEFINE_bool("debug", False, "show the full traceback of an error", flag_values=fv)
    if define is not None:
        define(flags, fv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
        print("\n\n".join(s for s in (f"usage: {usage}" if usage else "", doc.strip(),
                                      f"flags:\n{fv.get_help()}") if s))
        raise SystemExit(0)
    path = None
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    if path is None:
        raise UsageError(f"--config is required (e.g. --config {example})")
    if not os.path.isfile(path.split(":", 1)[0]):
        raise UsageError(f"config file {path.split(':', 1)[0]!r} does not exist")
    try:
        fv([prog] + argv)
        config = config_flag.value
    except flags.Error as e:
        raise UsageError(_one_line(e)) from None
    except ValueError as e:
        raise UsageError(f"config {path}: {_one_line(e)}") from None
    return fv, config, path
