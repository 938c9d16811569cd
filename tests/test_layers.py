"""The package's layer rules, checked two ways.

Layers are the top-level entries of ``dekag_jax`` (one folder each, or one module):

* **infrastructure**: ``errors`` (shared error types, CLI error wrapper), ``runtime`` (the one
  runtime setup), ``parallel`` (mesh helpers), ``perf`` (FLOP counts and timing helpers). Any
  layer may import them; they import only each other.
* **entry points**: ``train``, ``evaluate``, ``report``, ``sweep`` (command-line jobs). No layer
  below imports them.
* **layers**, with what each may NOT import (from the package; third-party in brackets):

  ========== ==================================================================================
  channel    models, weights, diffusion, world, metrics, baselines, adapt, ka, entry points
             [flax, torch, diffusers, transformers]: the link-level stack is plain JAX.
  models     anything but infrastructure (no channel, weights, diffusion, world, metrics,
             baselines, adapt, ka, entry points) [torch, diffusers]: networks only; weights/
             imports models, never the reverse.
  weights    world, baselines, metrics, adapt, ka, entry points [torch]: it knows nothing of
             alignment (adapter files work on plain dicts).
  diffusion  models, weights, world, baselines, adapt, ka, entry points [torch, diffusers,
             transformers]: it takes functions and pipeline objects (the pipeline carries its
             ``tokenize``), never model classes.
  metrics    models, weights, diffusion, world, baselines, adapt, ka, entry points [flax, torch,
             diffusers, transformers]: metrics are math over arrays and feature *functions*.
  adapt      models, channel, world, baselines, ka, entry points [torch, diffusers]: adapters
             attach by parameter path to any linen model without importing it; φ arrives as
             raw arrays.
  ka         entry points.
  world      ka, entry points (the tiny world is data, shipped models and their gates; the
             alignment code uses it, not the reverse).
  baselines  only channel, metrics and infrastructure.
  ========== ==================================================================================

Check 1 (static, every rule): parse every ``.py`` of the package with ``ast``, collect all
imports, including function-local ones (a lazy import is still a dependency) and relative imports
resolved to absolute names; importing ``a.b.c`` also imports the packages ``a`` and ``a.b`` (their
``__init__`` runs). Rules apply to the *transitive* closure inside the package, so a layer cannot
reach a forbidden one through a permitted one; a violation names the chain.

Check 2 (dynamic): in a fresh interpreter per layer, import every module of the layer and inspect
``sys.modules`` for forbidden packages (catches what third-party imports pull in, which the
static check cannot see).

A top-level entry not classified here fails the test: add it to ``LAYERS`` with its rule.
The checker itself is tested on synthetic sources, so it cannot pass by seeing nothing.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

PKG = "dekag_jax"
PKG_DIR = Path(__file__).resolve().parents[1] / PKG

INFRA = frozenset({"errors", "runtime", "parallel", "perf"})
ENTRY = frozenset({"train", "evaluate", "report", "sweep"})
_ALL = frozenset({"channel", "models", "weights", "diffusion", "metrics", "world", "baselines", "adapt", "ka"})

# layer -> (forbidden layers of the package, forbidden third-party top-level packages)
LAYERS: dict[str, tuple[frozenset, frozenset]] = {
    "channel": (_ALL - {"channel"} | ENTRY, frozenset({"flax", "torch", "diffusers", "transformers"})),
    "models": (_ALL - {"models"} | ENTRY, frozenset({"torch", "diffusers"})),
    "weights": (frozenset({"world", "baselines", "metrics", "adapt", "ka"}) | ENTRY, frozenset({"torch"})),
    "diffusion": (frozenset({"models", "weights", "world", "baselines", "adapt", "ka"}) | ENTRY,
                  frozenset({"torch", "diffusers", "transformers"})),
    "metrics": (frozenset({"models", "weights", "diffusion", "world", "baselines", "adapt", "ka"}) | ENTRY,
                frozenset({"flax", "torch", "diffusers", "transformers"})),
    "adapt": (frozenset({"models", "channel", "world", "baselines", "ka"}) | ENTRY,
              frozenset({"torch", "diffusers"})),
    "ka": (ENTRY, frozenset()),
    "world": (frozenset({"ka"}) | ENTRY, frozenset()),
    "baselines": (_ALL - {"baselines", "channel", "metrics"} | ENTRY, frozenset()),
}
for _m in INFRA:  # infrastructure imports only infrastructure
    LAYERS[_m] = (_ALL | ENTRY, frozenset({"flax", "torch", "diffusers", "transformers"}))


# ----------------------------------------------------------------------------- the checker

def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted module name, is_package) of a file under ``root`` (the folder holding the package)."""
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every absolute name ``source`` (the text of ``module``) imports, anywhere in the file.

    ``from X import a`` yields ``X`` and ``X.a`` (``a`` may be a submodule; callers keep the names
    that are modules). Relative imports are resolved against ``module``.
    """
    tree = ast.parse(source)
    base = module.split(".") if is_package else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                if up > len(base) - 1:
                    raise ValueError(f"{module}: relative import beyond the top-level package")
                parent = base[:len(base) - up]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names if a.name != "*")
    return out


def build_graph(sources: dict[str, tuple[str, bool]], pkg: str = PKG):
    """``sources``: module -> (source, is_package). Returns (internal edges module -> set of package
    modules, external module -> set of third-party top-level names)."""
    known = set(sources)
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for mod, (src, is_pkg) in sources.items():
        ins, ext = set(), set()
        for name in imported_names(src, mod, is_pkg):
            top = name.split(".")[0]
            if top != pkg:
                if top:
                    ext.add(top)
                continue
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                prefix = ".".join(parts[:k])
                if prefix in known and prefix != mod:
                    ins.add(prefix)
        internal[mod] = ins
        external[mod] = ext
    return internal, external


def layer_of(module: str, pkg: str = PKG) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(sources: dict[str, tuple[str, bool]], rules=None, pkg: str = PKG) -> list[str]:
    """One line per broken rule: the module, what it reaches, and the import chain."""
    rules = LAYERS if rules is None else rules
    internal, external = build_graph(sources, pkg)
    out = []
    for mod in sorted(sources):
        layer = layer_of(mod, pkg)
        if layer is None:
            continue
        if layer not in rules and layer not in ENTRY and layer != "__main__":
            out.append(f"{mod}: top-level entry {layer!r} has no layer rule (add it to LAYERS in tests/test_layers.py)")
            continue
        if layer not in rules:
            continue
        bad_layers, bad_ext = rules[layer]
        parent = {mod: None}
        queue = deque([mod])
        while queue:  # BFS: shortest import chain to each reachable module
            cur = queue.popleft()
            for nxt in sorted(internal.get(cur, ())):
                if nxt not in parent:
                    parent[nxt] = cur
                    queue.append(nxt)
        for reached in sorted(parent):
            chain = []
            c = reached
            while c is not None:
                chain.append(c)
                c = parent[c]
            via = " -> ".join(reversed(chain))
            rl = layer_of(reached, pkg)
            if reached != mod and rl in bad_layers and rl != layer:
                out.append(f"{mod} ({layer}) imports {pkg}.{rl}: {via}")
            for e in sorted(external.get(reached, ()) & bad_ext):
                out.append(f"{mod} ({layer}) imports {e}: {via} -> {e}")
    # one line per (module, target): a module importing several files of one layer reports the first
    seen, uniq = set(), []
    for line in out:
        key = line.split(":")[0]
        if key not in seen:
            seen.add(key)
            uniq.append(line)
    return uniq


def package_sources(pkg_dir: Path = PKG_DIR) -> dict[str, tuple[str, bool]]:
    out = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        name, is_pkg = module_name(path, pkg_dir.parent)
        out[name] = (path.read_text(encoding="utf-8"), is_pkg)
    return out


# ----------------------------------------------------------------------------- the checker, tested

def _fake(files: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """Synthetic package: {"dekag_jax/diffusion/generate.py": source} -> sources."""
    out = {"dekag_jax": ("", True)}
    for rel, src in files.items():
        p = Path(rel)
        name, is_pkg = module_name(Path("/x") / p, Path("/x"))
        out[name] = (src, is_pkg)
        for k in range(2, len(p.parts)):  # parent packages exist
            out.setdefault(".".join(p.parts[:k]), ("", True))
    return out


def test_checker_finds_todays_violations_on_synthetic_sources():
    # the violation this issue removed: diffusion/generate.py imported models.tokenizer lazily
    src = _fake({
        "dekag_jax/diffusion/generate.py": "def f():\n    from dekag_jax.models.tokenizer import tokenize\n",
        "dekag_jax/models/tokenizer.py": "import numpy\n",
    })
    v = violations(src)
    assert v == ["dekag_jax.diffusion.generate (diffusion) imports dekag_jax.models: "
                 "dekag_jax.diffusion.generate -> dekag_jax.models"], v
    # and the other one: diffusion/schedules.py imported models.errors (relative form)
    src = _fake({"dekag_jax/diffusion/schedules.py": "from ..models.errors import E\n",
                 "dekag_jax/models/errors.py": ""})
    assert any("dekag_jax.diffusion.schedules (diffusion) imports dekag_jax.models" in s for s in violations(src))


def test_checker_relative_transitive_and_third_party():
    src = _fake({
        # channel -> (relative) channel.helper -> (function-local) world: a transitive violation
        "dekag_jax/channel/__init__.py": "from . import helper\n",
        "dekag_jax/channel/helper.py": "def g():\n    from ..world import render\n",
        "dekag_jax/world/render.py": "",
        # channel importing flax (third-party rule), metrics importing flax through a submodule
        "dekag_jax/channel/qam.py": "import flax.linen as nn\n",
        "dekag_jax/metrics/__init__.py": "from .fid import x\n",
        "dekag_jax/metrics/fid.py": "from flax import struct\n",
        # adapt -> weights.convert is fine unless weights/__init__ pulls in models
        "dekag_jax/adapt/lora.py": "from dekag_jax.weights.convert import flatten\n",
        "dekag_jax/weights/__init__.py": "from dekag_jax.models import unet\n",
        "dekag_jax/weights/convert.py": "",
        "dekag_jax/models/unet.py": "from dekag_jax.errors import E\n",
        "dekag_jax/errors.py": "",
        # allowed: models -> errors; ka -> models; baselines -> channel, metrics
        "dekag_jax/ka/t.py": "from dekag_jax.models import unet\n",
        "dekag_jax/baselines/b.py": "from ..channel import qam\nfrom ..metrics import fid\n",
        "dekag_jax/newthing.py": "",
    })
    v = violations(src)
    text = "\n".join(v)
    assert ("dekag_jax.channel.helper (channel) imports dekag_jax.world: "
            "dekag_jax.channel.helper -> dekag_jax.world") in v
    assert "dekag_jax.channel (channel) imports dekag_jax.world: dekag_jax.channel -> dekag_jax.channel.helper" \
        " -> dekag_jax.world" in v
    assert "dekag_jax.channel.qam (channel) imports flax" in text
    assert "dekag_jax.metrics.fid (metrics) imports flax" in text and "dekag_jax.metrics (metrics) imports flax" in text
    assert ("dekag_jax.adapt.lora (adapt) imports dekag_jax.models: dekag_jax.adapt.lora -> dekag_jax.weights -> "
            "dekag_jax.models") in v
    # baselines reaches channel -> world and flax through channel: reported for baselines too
    assert any(s.startswith("dekag_jax.baselines.b (baselines) imports dekag_jax.world") for s in v)
    assert "top-level entry 'newthing' has no layer rule" in text
    assert not any(s.startswith(("dekag_jax.ka", "dekag_jax.models.unet", "dekag_jax.errors")) for s in v), v


def test_imported_names_resolution():
    names = imported_names("from . import a\nfrom .. import b\nfrom ..c.d import e\nimport x.y\n"
                           "def f():\n    import z\n", "dekag_jax.p.q", False)
    assert {"dekag_jax.p", "dekag_jax.p.a", "dekag_jax", "dekag_jax.b", "dekag_jax.c.d", "dekag_jax.c.d.e",
            "x.y", "z"} <= names
    names = imported_names("from . import a\n", "dekag_jax.p", True)  # inside a package __init__
    assert "dekag_jax.p.a" in names


# ----------------------------------------------------------------------------- the package, checked

def test_layer_rules_static():
    sources = package_sources()
    assert len(sources) > 40 and "dekag_jax.channel.qam" in sources  # the checker sees the package
    v = violations(sources)
    assert not v, "layer rules broken (see tests/test_layers.py):\n" + "\n".join(v)


def _layer_modules(layer: str) -> list[str]:
    return sorted(m for m in package_sources() if layer_of(m) == layer and not m.endswith(".__main__"))


_PROBE = """
import importlib, json, os, sys
import numpy, scipy, jax, jax.numpy  # shared by every layer and forbidden to none: loaded once, before forking
groups = json.loads(sys.argv[1])
assert not [m for m in sys.modules if m.startswith("dekag_jax")]
result = {}
for name, (mods, bad_layers, bad_ext) in groups.items():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a clean interpreter state as far as the package is concerned
        os.close(r)
        try:
            for m in mods:
                importlib.import_module(m)
            loaded = set(sys.modules)
            hits = sorted({f"dekag_jax.{l}" for l in bad_layers if f"dekag_jax.{l}" in loaded} |
                          {e for e in bad_ext if e in loaded})
            msg = {"hits": hits}
        except BaseException as e:
            msg = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        result[name] = json.loads(f.read())
    os.waitpid(pid, 0)
print(json.dumps(result))
"""


def test_layer_rules_in_fresh_interpreters():
    """Import each layer (all its modules) in a fresh interpreter state; nothing forbidden is loaded.

    One subprocess imports NumPy, SciPy and JAX (allowed everywhere) once, then forks one child per
    layer, which imports the layer and reports ``sys.modules``: same answer as one interpreter per
    layer, at a fraction of the start-up cost.
    """
    groups = {layer: _layer_modules(layer) for layer in LAYERS if layer not in INFRA}
    groups["infrastructure"] = sum((_layer_modules(m) for m in sorted(INFRA)), [])  # one rule, one child
    arg = {}
    for layer, mods in groups.items():
        if mods:  # a layer not written yet has nothing to check
            bad_layers, bad_ext = LAYERS[layer if layer in LAYERS else "errors"]
            arg[layer] = [mods, sorted(bad_layers), sorted(bad_ext)]
    assert {"channel", "models", "diffusion", "metrics", "weights", "infrastructure"} <= set(arg)
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(arg)], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=str(PKG_DIR.parent), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    problems = [f"{layer}: import failed: {r['error']}" if "error" in r else
                f"importing {PKG}.{layer} loads {', '.join(r['hits'])}"
                for layer, r in res.items() if r.get("error") or r.get("hits")]
    assert set(res) == set(arg)
    assert not problems, "\n".join(problems)


def test_channel_import_is_light_and_models_exports_are_lazy():
    """In a truly fresh interpreter: ``import dekag_jax.channel`` loads no flax, models, world or
    diffusion (the promise of channel/__init__); ``import dekag_jax.models`` alone loads no flax,
    and its exports work (``from dekag_jax.models import UNet2DConditionModel``)."""
    code = ("import sys, json\n"
            "heavy = lambda: sorted(m for m in sys.modules if m.split('.')[0] == 'flax' or "
            "m.startswith(('dekag_jax.models.', 'dekag_jax.world', 'dekag_jax.diffusion')))\n"
            "import dekag_jax.channel\n"
            "a = heavy()\n"
            "import dekag_jax.models\n"
            "b = heavy()\n"
            "from dekag_jax.models import UNet2DConditionModel, AutoencoderKL, CLIPTextModel, ViTModel, CLIPModel\n"
            "print(json.dumps([a, b, UNet2DConditionModel.__module__, 'flax' in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=str(PKG_DIR.parent))
    assert out.returncode == 0, out.stderr[-2000:]
    after_channel, after_models, where, flax_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_channel == [] and after_models == [], (after_channel, after_models)
    assert where == "dekag_jax.models.unet" and flax_loaded


# ----------------------------------------------------------------------------- keyword construction

def positional_module_calls(sources: dict[str, str]) -> list[str]:
    """``file:line: Class`` for every construction of a linen Module class defined in ``sources``
    (file -> text) that passes positional arguments: adding a field to a module must not shift
    the meaning of its callers' arguments silently (developers' guide)."""
    trees = {f: ast.parse(s) for f, s in sources.items()}
    modules: set[str] = set()
    classes = {c.name: c for t in trees.values() for c in ast.walk(t) if isinstance(c, ast.ClassDef)}
    changed = True
    while changed:  # Module subclasses, including subclasses of our own modules
        changed = False
        for name, c in classes.items():
            if name in modules:
                continue
            for b in c.bases:
                bn = b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", None)
                if bn == "Module" or bn in modules:
                    modules.add(name)
                    changed = True
    out = []
    for f, t in trees.items():
        for node in ast.walk(t):
            if not isinstance(node, ast.Call):
                continue
            fn, args = node.func, node.args
            if isinstance(fn, ast.Name) and fn.id == "partial" and args:  # partial(Module, a, b)
                fn, args = args[0], args[1:]
            if isinstance(fn, ast.Name) and fn.id in modules and args:
                out.append(f"{f}:{node.lineno}: {fn.id}")
    return out


def test_keyword_checker_on_synthetic_source():
    src = ("import flax.linen as nn\nfrom functools import partial\n"
           "class A(nn.Module):\n    n: int\nclass B(A):\n    m: int\n"
           "def f():\n    A(n=1)\n    A(1)\n    partial(B, 2)\n    B(n=1, m=2)\n")
    assert positional_module_calls({"x.py": src}) == ["x.py:9: A", "x.py:10: B"]


def test_models_build_submodules_with_keywords():
    sources = {str(p.relative_to(PKG_DIR.parent)): p.read_text(encoding="utf-8")
               for p in sorted((PKG_DIR / "models").glob("*.py"))}
    bad = positional_module_calls(sources)
    assert not bad, "build these submodules with keyword arguments:\n" + "\n".join(bad)
