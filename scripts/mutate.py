"""Mutation testing of the critical modules: does the suite notice when one line is broken?

    nice -n 15 python scripts/mutate.py --config configs/mutate.py [--only qam,decoder]
        [--config.max_mutants=40] [--config.seed=0] [--list] [--out runs/mutate]
        [--match 'decoder.py:(72|106):']      # only the sites matching a regex

What it does, per module of the config (path + the fast tests that should kill its mutants):

1. Copies the working tree (without .git, runs, caches) into a temporary directory: mutants
   are only ever written there, so the tree you work in is never touched (and the copy is
   deleted at the end, even on Ctrl-C).
2. Parses the module (``ast``) and lists every mutation site (below); samples ``max_mutants``
   of them with ``seed`` (0 = all).
3. Runs the module's tests on the unmutated copy (baseline: must pass), then once per mutant
   with ``-x`` and a timeout, restoring the original file after each (try/finally).
   A mutant is *killed* when the tests fail, error or time out, *survived* when they pass.
4. Prints the kill rate per module and every survivor (file:line, the mutation, the mutated
   line), writes ``report.json`` to ``--out`` if given. Survivors judged equivalent (the
   mutation cannot change behaviour) are listed in ``scripts/mutate_equivalent.txt`` as
   ``path:line: mutation  # reason`` and reported apart, not counted as survived.

Mutation operators (a small AST mutator; mutmut 3 runs the whole suite per mutant through its
own trampolines, which jit-compiled JAX code defeats): comparison flips (< <=, > >=, == !=,
is / is not, in / not in), arithmetic swaps (+ -, * /, // *, ** *, & |, ^ |, << >>), augmented
assignment swaps, constants (n -> n + 1, n -> 0, True <-> False), unary minus and ``not``
dropped, ``and`` <-> ``or``, ``min``/``max``, ``minimum``/``maximum``, ``any``/``all``,
``argmin``/``argmax`` swapped, ``if``/``while`` conditions negated, and a statement replaced by
``pass``. Docstrings, annotations and strings are never mutated.

Speed: every mutant needs a fresh import of the package. With ``fork`` (default) a server
process imports the heavy third-party modules once (``preload``; JAX is imported but never
initialised there) and forks one child per mutant, which drops every ``dekag_jax``/test module
and runs ``pytest.main``: a mutant costs its tests' own time, not an interpreter start plus
``import jax``. ``--config.fork=False`` runs a plain subprocess per mutant instead. Bytecode
caching is off in the copy (a mutant of equal size written within the same second could
otherwise be served from a stale .pyc).

Run on demand, not in CI. Because the machine is shared, run it under ``nice``.
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import importlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
        ast.NotIn: ast.In}
_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
        ast.FloorDiv: ast.Mult, ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv, ast.BitAnd: ast.BitOr,
        ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitOr, ast.LShift: ast.RShift,
        ast.RShift: ast.LShift}
_SWAP_NAMES = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum",
               "any": "all", "all": "any", "argmin": "argmax", "argmax": "argmin",
               "amin": "amax", "amax": "amin"}
_SYM = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
        ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
        ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**",
        ast.Mod: "%", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
        ast.RShift: ">>"}


@dataclasses.dataclass
class Site:
    """One mutation: the ``index``-th candidate in traversal order (stable for a given file)."""
    index: int
    line: int
    desc: str


class _Mutator(ast.NodeTransformer):
    """Walks a module; with ``target=None`` only lists sites, else applies site ``target``."""

    def __init__(self, target: Optional[int] = None):
        self.target = target
        self.sites: list[Site] = []
        self.applied: Optional[Site] = None

    # -- bookkeeping ------------------------------------------------------------------
    def _site(self, node, desc) -> bool:
        i = len(self.sites)
        s = Site(i, getattr(node, "lineno", 0), desc)
        self.sites.append(s)
        if i == self.target:
            self.applied = s
            return True
        return False

    # -- never mutate documentation, annotations or dunder metadata --------------------
    def _body(self, body):
        start = 0
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                  ast.Constant) \
                and isinstance(body[0].value.value, str):
            start = 1  # docstring
        out = body[:start]
        for k, stmt in enumerate(body[start:], start):
            droppable = (len(body) - start > 1 and isinstance(
                stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return))
                and not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)))
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id.startswith("__") for t in stmt.targets):
                out.append(stmt)          # __all__ and friends
                continue
            if droppable and self._site(stmt, "statement -> pass"):
                out.append(ast.copy_location(ast.Pass(), stmt))
                continue
            out.append(self.visit(stmt))
        return out

    def visit_Module(self, node):
        node.body = self._body(node.body)
        return node

    def _visit_def(self, node):
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        node.body = self._body(node.body)
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_def

    def visit_ClassDef(self, node):
        node.body = self._body(node.body)
        return node

    def visit_arg(self, node):
        return node  # annotations

    def visit_AnnAssign(self, node):
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_JoinedStr(self, node):
        return node  # f-strings (error messages)

    def visit_Raise(self, node):
        return node  # which exception is raised is tested by the error tests, not mutated here

    def visit_Assert(self, node):
        return node

    # -- blocks ----------------------------------------------------------------------------
    def _block(self, node, name):
        node.test = self.visit(node.test)
        if self._site(node, f"{name} condition negated"):
            node.test = ast.UnaryOp(ast.Not(), node.test)
        node.body = self._body(node.body)
        node.orelse = self._body(node.orelse) if node.orelse else node.orelse
        return node

    def visit_If(self, node):
        return self._block(node, "if")

    def visit_While(self, node):
        return self._block(node, "while")

    def visit_For(self, node):
        node.iter = self.visit(node.iter)
        node.body = self._body(node.body)
        node.orelse = self._body(node.orelse) if node.orelse else node.orelse
        return node

    def visit_With(self, node):
        node.items = [self.visit(i) for i in node.items]
        node.body = self._body(node.body)
        return node

    def visit_Try(self, node):
        node.body = self._body(node.body)
        node.handlers = [self.visit(h) for h in node.handlers]
        node.orelse = self._body(node.orelse) if node.orelse else node.orelse
        node.finalbody = self._body(node.finalbody) if node.finalbody else node.finalbody
        return node

    def visit_ExceptHandler(self, node):
        node.body = self._body(node.body)
        return node

    # -- expressions -------------------------------------------------------------------------
    def visit_Compare(self, node):
        self.generic_visit(node)
        for k, op in enumerate(node.ops):
            new = _CMP.get(type(op))
            if new and self._site(node, f"{_SYM[type(op)]} -> {_SYM[new]}"):
                node.ops[k] = new()
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        new = _BIN.get(type(node.op))
        if new and self._site(node, f"{_SYM[type(node.op)]} -> {_SYM[new]}"):
            node.op = new()
        return node

    def visit_AugAssign(self, node):
        node.value = self.visit(node.value)
        new = _BIN.get(type(node.op))
        if new and self._site(node, f"{_SYM[type(node.op)]}= -> {_SYM[new]}="):
            node.op = new()
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._site(node, f"{type(node.op).__name__.lower()} -> {new.__name__.lower()}"):
            node.op = new()
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, (ast.USub, ast.Not)):
            if self._site(node, f"{'-' if isinstance(node.op, ast.USub) else 'not '}x -> x"):
                return node.operand
        return node

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            if self._site(node, f"{v} -> {not v}"):
                return ast.copy_location(ast.Constant(not v), node)
        elif isinstance(v, (int, float)):
            if self._site(node, f"{v!r} -> {v + 1!r}"):
                return ast.copy_location(ast.Constant(v + 1), node)
            if v != 0 and self._site(node, f"{v!r} -> 0"):
                return ast.copy_location(ast.Constant(type(v)(0)), node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name in _SWAP_NAMES and self._site(node, f"{name} -> {_SWAP_NAMES[name]}"):
            if isinstance(f, ast.Name):
                node.func = ast.copy_location(ast.Name(_SWAP_NAMES[name], ast.Load()), f)
            else:
                node.func = ast.copy_location(
                    ast.Attribute(f.value, _SWAP_NAMES[name], ast.Load()), f)
        return node


def list_sites(source: str) -> list[Site]:
    m = _Mutator()
    m.visit(ast.parse(source))
    return m.sites


def mutate(source: str, index: int) -> tuple[str, Site]:
    m = _Mutator(target=index)
    tree = m.visit(ast.parse(source))
    if m.applied is None:
        raise IndexError(f"no mutation site {index}")
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n", m.applied


def baseline_source(source: str) -> str:
    """The unmutated module as the mutator writes it (ast.unparse), for the baseline run."""
    return ast.unparse(ast.parse(source)) + "\n"


# ----------------------------------------------------------------------------- running
def _copy_tree(dst: str) -> str:
    ignore = shutil.ignore_patterns(".git", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                                    "*.pyc", "shared")
    work = os.path.join(dst, "tree")
    shutil.copytree(ROOT, work, ignore=ignore, symlinks=True)
    return work


def _pytest_args(tests: list[str]) -> list[str]:
    return ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--no-header", "-o",
            "addopts=", *tests]


class Runner:
    """Runs a test selection in the copied tree, forked from a pre-imported server or not."""

    def __init__(self, work: str, fork: bool, preload: list[str]):
        self.work, self.fork = work, fork
        self.env = dict(os.environ, PYTHONPATH=work + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        PYTHONDONTWRITEBYTECODE="1")
        self.env.pop("CI", None)
        if fork:
            os.chdir(work)
            sys.path.insert(0, work)
            sys.dont_write_bytecode = True
            os.environ.update(PYTHONDONTWRITEBYTECODE="1")
            os.environ.pop("CI", None)
            for name in preload:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass

    def check_import(self) -> str:
        """Where ``dekag_jax`` imports from, as a test run would see it (must be the copy)."""
        p = subprocess.run([sys.executable, "-c", "import dekag_jax, os; print(os.path.dirname("
                            "os.path.dirname(os.path.abspath(dekag_jax.__file__))))"],
                           cwd=self.work, env=self.env, capture_output=True, text=True, timeout=120)
        return p.stdout.strip()

    def run(self, tests: list[str], timeout: float) -> tuple[str, float]:
        """('passed' | 'failed' | 'timeout' | 'error', seconds)."""
        t0 = time.time()
        if not self.fork:
            try:
                p = subprocess.run([sys.executable, "-m", "pytest", *_pytest_args(tests)],
                                   cwd=self.work, env=self.env, capture_output=True, text=True,
                                   timeout=timeout)
            except subprocess.TimeoutExpired:
                return "timeout", time.time() - t0
            return _outcome(p.returncode), time.time() - t0
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: fresh package and test modules, then pytest in-process
            code = 4
            try:
                os.setpgid(0, 0)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                for name in list(sys.modules):
                    if name == "dekag_jax" or name.startswith(("dekag_jax.", "test_", "conftest")):
                        del sys.modules[name]
                importlib.invalidate_caches()
                import pytest
                code = int(pytest.main(_pytest_args(tests)))
            finally:
                os._exit(code)
        deadline = t0 + timeout
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    pid = None
                    return _outcome(os.waitstatus_to_exitcode(status)), time.time() - t0
                if time.time() > deadline:
                    return "timeout", time.time() - t0
                time.sleep(0.05)
        finally:
            if pid is not None:   # timeout, Ctrl-C or SIGTERM: the child and its processes go too
                for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                    try:
                        kill()
                    except (ProcessLookupError, PermissionError):
                        pass
                os.waitpid(pid, 0)


def _outcome(code: int) -> str:
    if code == 0:
        return "passed"
    if code == 1:
        return "failed"
    return "error"  # 2 interrupted (collection error: e.g. a mutant that breaks imports), 3-5


def _load_equivalent(path: str) -> dict:
    out = {}
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, reason = line.partition("#")
            out[key.strip()] = reason.strip()
    return out


def _load_config(path: str, overrides: list[str]):
    spec = importlib.util.spec_from_file_location("mutate_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    for ov in overrides:
        k, _, v = ov.partition("=")
        k = k.removeprefix("--config.")
        cur = cfg[k]
        cfg[k] = type(cur)(v.lower() in ("1", "true", "yes")) if isinstance(cur, bool) else type(cur)(v)
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "mutate.py"))
    ap.add_argument("--only", default="", help="comma-separated module names of the config")
    ap.add_argument("--list", action="store_true", help="list the mutation sites and exit")
    ap.add_argument("--out", default="", help="folder for report.json")
    ap.add_argument("--match", default="", help="regex over 'path:line: mutation': run only the "
                    "matching sites (no sampling), e.g. to re-check the last survivors")
    args, rest = ap.parse_known_args(argv)
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        ap.error(f"unknown arguments: {bad}")
    cfg = _load_config(args.config, rest)
    names = [n for n in args.only.split(",") if n] or list(cfg.modules.keys())
    unknown = [n for n in names if n not in cfg.modules]
    if unknown:
        ap.error(f"--only: unknown module(s) {unknown}; the config has {list(cfg.modules.keys())}")
    equivalent = _load_equivalent(os.path.join(ROOT, "scripts", "mutate_equivalent.txt"))

    plans = []
    for name in names:
        m = cfg.modules[name]
        src_path = os.path.join(ROOT, m.path)
        tests = [t for t in m.tests.split(",") if t]
        missing = [t for t in tests if not os.path.exists(os.path.join(ROOT, t.split("::")[0]))]
        if not os.path.exists(src_path):
            print(f"[{name}] {m.path} does not exist: skipped")
            continue
        if missing:
            print(f"[{name}] test files not found, left out: {missing}")
            tests = [t for t in tests if t not in missing]
        if not tests:
            print(f"[{name}] no tests: skipped")
            continue
        source = open(src_path).read()
        sites = list_sites(source)
        chosen = sites
        if args.match:
            chosen = [x for x in sites if re.search(args.match, f"{m.path}:{x.line}: {x.desc}")]
        elif cfg.max_mutants and len(sites) > cfg.max_mutants:
            chosen = sorted(random.Random(f"{cfg.seed}:{m.path}").sample(sites, cfg.max_mutants),
                            key=lambda s: s.index)
        plans.append((name, m.path, tests, source, sites, chosen))
        if args.list:
            print(f"[{name}] {m.path}: {len(sites)} sites, {len(chosen)} chosen")
            for s in chosen:
                print(f"  {m.path}:{s.line}: {s.desc}")
    if args.list or not plans:
        return 0

    # SIGTERM unwinds like Ctrl-C, so the finally blocks restore files and delete the copy.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="dekag_mutate_")
    report = {}
    try:
        work = _copy_tree(tmp)
        runner = Runner(work, bool(cfg.fork), [p for p in cfg.preload.split(",") if p])
        where = runner.check_import()
        if os.path.realpath(where) != os.path.realpath(work):
            raise SystemExit(f"dekag_jax imports from {where!r}, not from the copy {work!r}: "
                             "refusing to run (mutants would not be tested)")
        for name, path, tests, source, sites, chosen in plans:
            target = os.path.join(work, path)
            lines = source.splitlines()
            res = dict(path=path, tests=tests, sites=len(sites), mutants=len(chosen), killed=0,
                       timeouts=0, survived=[], equivalent=[], seconds=0.0)
            try:
                with open(target, "w") as fh:
                    fh.write(baseline_source(source))
                base, secs = runner.run(tests, max(4 * cfg.timeout_s, 900.0))
                print(f"[{name}] baseline {base} in {secs:.0f} s; {len(chosen)} of {len(sites)} "
                      f"mutants", flush=True)
                if base != "passed":
                    res["error"] = f"baseline {base}: the tests fail without any mutation"
                    report[name] = res
                    continue
                # A mutant may loop forever (a negated while condition): allow 3x the baseline.
                timeout = min(cfg.timeout_s, 3 * secs + 30)
                t_mod = time.time()
                for k, site in enumerate(chosen):
                    mutated, s = mutate(source, site.index)
                    with open(target, "w") as fh:
                        fh.write(mutated)
                    outcome, secs = runner.run(tests, timeout)
                    key = f"{path}:{s.line}: {s.desc}"
                    code_line = lines[s.line - 1].strip() if 0 < s.line <= len(lines) else ""
                    if outcome == "passed":
                        if key in equivalent:
                            res["equivalent"].append(dict(site=key, reason=equivalent[key]))
                        else:
                            res["survived"].append(dict(site=key, line=code_line))
                    else:
                        res["killed"] += 1
                        res["timeouts"] += outcome == "timeout"
                    print(f"  [{k + 1}/{len(chosen)}] {outcome:8s} {secs:5.1f}s  {key}", flush=True)
                res["seconds"] = round(time.time() - t_mod, 1)
            finally:
                with open(target, "w") as fh:   # always restore the module in the copy
                    fh.write(source)
            denom = res["mutants"] - len(res["equivalent"])
            res["kill_rate"] = round(res["killed"] / denom, 4) if denom else None
            report[name] = res
    finally:
        os.chdir(ROOT)
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n== mutation testing: killed / (mutants - equivalent) ==")
    for name, r in report.items():
        if "error" in r:
            print(f"{name:12s} {r['error']}")
            continue
        print(f"{name:12s} {r['killed']:3d}/{r['mutants'] - len(r['equivalent']):3d} = "
              f"{100 * (r['kill_rate'] or 0):5.1f}%  (sites {r['sites']}, timeouts {r['timeouts']}, "
              f"equivalent {len(r['equivalent'])}, {r['seconds']:.0f} s)")
        for s in r["survived"]:
            print(f"    SURVIVED {s['site']}    | {s['line']}")
        for s in r["equivalent"]:
            print(f"    equivalent {s['site']}  # {s['reason']}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "report.json"), "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
