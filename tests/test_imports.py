"""The dependency rules of DESIGN.md, checked by parsing every module's imports with ``ast``.

The source trees are read as they install: ``speechssl/`` is ``speechssl``, ``upstream/`` is
``speechssl.upstream`` and ``downstream/`` is ``speechssl.downstream``. Every import counts:
module level, inside functions and ``if TYPE_CHECKING:`` blocks, relative imports, and
``importlib.import_module("...")`` / ``import_module("...")`` with a string literal. An import
is an edge to the most specific module of the trees it names (``from a.b import c`` is an edge
to ``a.b.c`` when that is a module, else to the package ``a.b``); importing a submodule is not
counted as importing its parent packages.

Rules (each a test below, each with a self-test on a planted violation):

* no import cycle between modules (a lazy import inside a function still closes a loop);
* the core (``speechssl`` except ``speechssl.commands`` and ``speechssl.cli``) never imports
  ``speechssl.upstream`` or ``speechssl.downstream``;
* no method package ``upstream/<m>/`` imports another method's package;
* no downstream task package ``downstream/<t>/`` imports another task's package (the
  top-level modules ``downstream/*.py`` are the shared part and may be imported by all);
* ``speechssl.downstream`` never imports ``speechssl.upstream`` (it reaches models through ``hub``);
* ``speechssl.data`` never imports ``speechssl.train`` (train depends on data, not the reverse);
* ``speechssl.nn`` never imports ``speechssl._hub`` or ``speechssl.hub``;
* nothing imports the bare top-level names ``upstream``/``downstream`` (they install inside
  ``speechssl``; such an import works only from a checkout).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"speechssl": REPO / "speechssl", "speechssl.upstream": REPO / "upstream",
         "speechssl.downstream": REPO / "downstream"}

UPSTREAM = "speechssl.upstream"
DOWNSTREAM = "speechssl.downstream"


@dataclass(frozen=True)
class Edge:
    """``src`` imports ``dst`` at ``path:line``."""

    src: str
    dst: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} ({self.path}:{self.line})"


@dataclass
class Graph:
    """Modules of the trees (dotted name → file) and the import edges between them."""

    files: dict[str, Path] = field(default_factory=dict, repr=False)
    packages: set[str] = field(default_factory=set, repr=False)
    edges: list[Edge] = field(default_factory=list, repr=False)
    bare: list[Edge] = field(default_factory=list, repr=False)  # imports of top-level upstream/downstream

    def out(self) -> dict[str, list[Edge]]:
        adj: dict[str, list[Edge]] = {m: [] for m in self.files}
        for e in self.edges:
            adj[e.src].append(e)
        return adj


def _modules(roots: dict[str, Path]) -> tuple[dict[str, Path], set[str]]:
    files: dict[str, Path] = {}
    packages: set[str] = set()
    # longest root first so that speechssl/upstream (if it ever existed) cannot shadow upstream/
    for prefix, root in sorted(roots.items(), key=lambda kv: -len(kv[0])):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if any(not p.isidentifier() for p in parts):
                continue  # not importable (e.g. a script with a dash)
            if parts[-1] == "__init__":
                parts = parts[:-1]
                name = ".".join([prefix, *parts])
                packages.add(name)
            else:
                name = ".".join([prefix, *parts])
            files.setdefault(name, path)
    return files, packages


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _import_module_literal(node: ast.Call) -> str | None:
    """The module of ``importlib.import_module("x")`` / ``import_module("x")``, or None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _raw_imports(module: str, is_package: bool, tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """``(base module, names imported from it, line)`` for every import in ``tree``."""
    out: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            out.append((base, [a.name for a in node.names if a.name != "*"], node.lineno))
        elif isinstance(node, ast.Call):
            target = _import_module_literal(node)
            if target is not None:
                if target.startswith("."):
                    level = len(target) - len(target.lstrip("."))
                    target = _resolve_relative(module, is_package, level, target.lstrip(".") or None)
                out.append((target, [], node.lineno))
    return out


def _known(files: dict[str, Path], name: str) -> str | None:
    """The most specific module of the trees that ``name`` is or lies in, or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in files:
            return candidate
    return None


def build_graph(roots: dict[str, Path]) -> Graph:
    """Parse every module under ``roots`` (dotted prefix → directory) into an import graph."""
    files, packages = _modules(roots)
    graph = Graph(files=files, packages=packages)
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        seen: set[tuple[str, int]] = set()
        for base, names, line in _raw_imports(module, module in packages, tree):
            top = base.split(".")[0]
            if top in ("upstream", "downstream"):
                graph.bare.append(Edge(module, base, rel, line))
                base = "speechssl." + base  # still check the rules against what it names
            targets = [f"{base}.{n}" if f"{base}.{n}" in files else base for n in names] or [base]
            for target in dict.fromkeys(targets):
                dst = _known(files, target)
                if dst is None or dst == module:
                    continue  # outside the trees, or a package importing a name from itself
                if (dst, line) not in seen:
                    seen.add((dst, line))
                    graph.edges.append(Edge(module, dst, rel, line))
    return graph


# --- the rules -----------------------------------------------------------------------------

def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _sub_package(module: str, parent: str, graph: Graph) -> str | None:
    """``parent.<x>`` when ``module`` lies in a sub-*package* ``x`` of ``parent`` (not a top module)."""
    if not module.startswith(parent + "."):
        return None
    head = parent + "." + module[len(parent) + 1:].split(".")[0]
    return head if head in graph.packages else None


def find_cycles(graph: Graph) -> list[list[Edge]]:
    """One cycle of edges through each strongly connected component (Tarjan) that has one."""
    adj = graph.out()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(root: str) -> None:  # iterative, so deep graphs cannot hit the recursion limit
        nonlocal counter
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            for edge in it:
                nxt = edge.dst
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(adj[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    components.append(comp)

    for module in sorted(adj):
        if module not in index:
            strongconnect(module)

    cycles = []
    for comp in components:
        members = set(comp)
        start = min(comp)
        self_loop = [e for e in adj[start] if e.dst == start]
        if len(comp) == 1 and not self_loop:
            continue
        if self_loop:
            cycles.append(self_loop[:1])
            continue
        # shortest path start -> ... -> start inside the component (BFS)
        prev: dict[str, Edge] = {}
        frontier = [start]
        found: Edge | None = None
        while frontier and found is None:
            nxt_frontier = []
            for node in frontier:
                for e in sorted(adj[node], key=lambda e: e.dst):
                    if e.dst not in members:
                        continue
                    if e.dst == start:
                        found = e
                        break
                    if e.dst not in prev:
                        prev[e.dst] = e
                        nxt_frontier.append(e.dst)
                if found:
                    break
            frontier = nxt_frontier
        assert found is not None
        path = [found]
        while path[0].src != start:
            path.insert(0, prev[path[0].src])
        cycles.append(path)
    return cycles


def core_violations(graph: Graph) -> list[Edge]:
    """Core modules (speechssl except commands/ and cli) that import upstream/ or downstream/."""
    def core(m: str) -> bool:
        return (_in(m, "speechssl") and not _in(m, UPSTREAM) and not _in(m, DOWNSTREAM)
                and not _in(m, "speechssl.commands") and m != "speechssl.cli")

    return [e for e in graph.edges if core(e.src) and (_in(e.dst, UPSTREAM) or _in(e.dst, DOWNSTREAM))]


def cross_package_violations(graph: Graph, parent: str) -> list[Edge]:
    """Edges from one sub-package of ``parent`` (a method, a task) into another."""
    out = []
    for e in graph.edges:
        a, b = _sub_package(e.src, parent, graph), _sub_package(e.dst, parent, graph)
        if a is not None and b is not None and a != b:
            out.append(e)
    return out


def layer_violations(graph: Graph, src: str, forbidden: tuple[str, ...]) -> list[Edge]:
    """Edges from package ``src`` into any of ``forbidden``."""
    return [e for e in graph.edges if _in(e.src, src) and any(_in(e.dst, f) for f in forbidden)]


def _report(what: str, edges: list[Edge], fix: str) -> str:
    lines = "\n".join(f"  {e}" for e in sorted(edges, key=lambda e: (e.src, e.line)))
    return f"{len(edges)} import(s) break the rule '{what}' ({fix}):\n{lines}"


def _cycle_report(cycles: list[list[Edge]]) -> str:
    parts = []
    for cycle in cycles:
        chain = " -> ".join([cycle[0].src] + [e.dst for e in cycle])
        where = ", ".join(f"{e.path}:{e.line}" for e in cycle)
        parts.append(f"  {chain}\n      at {where}")
    return (f"{len(cycles)} import cycle(s) (move the shared part into a module both can import, "
            f"or make the dependency one-way):\n" + "\n".join(parts))


def _check(bad: list[Edge], what: str, fix: str) -> None:
    if bad:
        pytest.fail(_report(what, bad, fix), pytrace=False)


@pytest.fixture(scope="module")
def graph() -> Graph:
    g = build_graph(ROOTS)
    assert "speechssl.registry" in g.files and "speechssl.upstream.hubert" in g.packages, sorted(g.files)[:20]
    return g


# --- the real trees ------------------------------------------------------------------------

def test_no_import_cycles(graph: Graph) -> None:
    cycles = find_cycles(graph)
    if cycles:
        pytest.fail(_cycle_report(cycles), pytrace=False)


def test_core_imports_no_upstream_or_downstream(graph: Graph) -> None:
    bad = core_violations(graph)
    _check(bad, "the core never imports speechssl.upstream/speechssl.downstream",
           "find methods and tasks through speechssl.registry; only commands/ and cli wire them")


def test_no_method_imports_another_method(graph: Graph) -> None:
    bad = cross_package_violations(graph, UPSTREAM)
    _check(bad, "no method imports another method", "move what they share into speechssl/nn")


def test_no_downstream_task_imports_another_task(graph: Graph) -> None:
    bad = cross_package_violations(graph, DOWNSTREAM)
    _check(bad, "no downstream task imports another task",
           "move what they share into a common downstream/*.py module or the core")


def test_downstream_imports_no_method(graph: Graph) -> None:
    bad = layer_violations(graph, DOWNSTREAM, (UPSTREAM,))
    _check(bad, "speechssl.downstream never imports speechssl.upstream",
           "load upstreams through speechssl.hub / speechssl.registry")


def test_data_does_not_import_train(graph: Graph) -> None:
    bad = layer_violations(graph, "speechssl.data", ("speechssl.train",))
    _check(bad, "speechssl.data never imports speechssl.train",
           "train depends on data; move the shared piece into speechssl.data")


def test_nn_does_not_import_hub(graph: Graph) -> None:
    bad = layer_violations(graph, "speechssl.nn", ("speechssl._hub", "speechssl.hub"))
    _check(bad, "speechssl.nn never imports speechssl._hub/speechssl.hub",
           "pass paths in, or read them from a module below nn")


def test_no_bare_upstream_downstream_imports(graph: Graph) -> None:
    _check(graph.bare, "import speechssl.upstream/downstream, never bare upstream/downstream",
           "they install inside speechssl")


def test_every_module_parsed(graph: Graph) -> None:
    on_disk = sum(1 for root in ROOTS.values() for p in root.rglob("*.py"))
    assert len(graph.files) == on_disk, "some .py file under speechssl/, upstream/ or downstream/ was not read"


# --- the checker finds planted violations --------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    """A clean miniature of the three trees; each self-test plants one violation into it."""
    _write(tmp_path / "core", {
        "__init__.py": "",
        "registry.py": "import importlib\n",
        "cli.py": "from speechssl.commands import run\n",
        "commands/__init__.py": "",
        "commands/run.py": "from speechssl.upstream.alpha import model\nimport speechssl.downstream.ks\n",
        "data/__init__.py": "",
        "data/dataset.py": "from . import collate\n",
        "data/collate.py": "import torch\n",
        "train/__init__.py": "from speechssl.train.trainer import Trainer\n",
        "train/trainer.py": "from speechssl.data import dataset\nfrom ..nn import layers\n",
        "nn/__init__.py": "",
        "nn/layers.py": "import math\n",
        "_hub/__init__.py": "",
        "_hub/zoo.py": "from speechssl.nn.layers import x\n",
        "hub.py": "from speechssl._hub import zoo\n",
    })
    _write(tmp_path / "up", {
        "__init__.py": "",
        "alpha/__init__.py": "from .model import M\n",
        "alpha/model.py": "from speechssl.nn import layers\n",
        "beta/__init__.py": "from speechssl.upstream.beta.model import M\n",
        "beta/model.py": "from speechssl.nn.layers import x\n",
    })
    _write(tmp_path / "down", {
        "__init__.py": "",
        "common.py": "from speechssl import hub\n",
        "ks/__init__.py": "from speechssl.downstream.common import y\n",
        "ks/task.py": "from .. import common\n",
        "sd/__init__.py": "",
        "sd/task.py": "from ..common import y\n",
    })
    return {"speechssl": tmp_path / "core", UPSTREAM: tmp_path / "up", DOWNSTREAM: tmp_path / "down"}


def test_clean_fake_tree_passes(fake: dict[str, Path]) -> None:
    g = build_graph(fake)
    assert not find_cycles(g)
    assert not core_violations(g)
    assert not cross_package_violations(g, UPSTREAM)
    assert not cross_package_violations(g, DOWNSTREAM)
    assert not layer_violations(g, "speechssl.data", ("speechssl.train",))
    assert not layer_violations(g, DOWNSTREAM, (UPSTREAM,))
    assert not layer_violations(g, "speechssl.nn", ("speechssl._hub", "speechssl.hub"))
    assert not g.bare
    # relative imports resolved: data.dataset -> data.collate, train.trainer -> nn.layers
    assert {(e.src, e.dst) for e in g.edges} >= {
        ("speechssl.data.dataset", "speechssl.data.collate"), ("speechssl.train.trainer", "speechssl.nn.layers"),
        ("speechssl.downstream.ks.task", "speechssl.downstream.common"), ("speechssl.upstream.alpha", "speechssl.upstream.alpha.model")}


def test_detects_cycle_through_function_level_import(fake: dict[str, Path]) -> None:
    _write(fake["speechssl"], {"data/collate.py": "def f():\n    from speechssl.data.dataset import D\n"})
    cycles = find_cycles(build_graph(fake))
    assert len(cycles) == 1
    report = _cycle_report(cycles)
    assert "speechssl.data.collate -> speechssl.data.dataset -> speechssl.data.collate" in report
    assert "collate.py:2" in report and "dataset.py:1" in report


def test_detects_long_cycle_through_import_module_literal(fake: dict[str, Path]) -> None:
    _write(fake["speechssl"], {"nn/layers.py": "import importlib\nM = importlib.import_module('speechssl.hub')\n"})
    g = build_graph(fake)
    chains = [[c[0].src] + [e.dst for e in c] for c in find_cycles(g)]
    assert chains == [["speechssl._hub.zoo", "speechssl.nn.layers", "speechssl.hub", "speechssl._hub.zoo"]]
    assert [str(e) for e in layer_violations(g, "speechssl.nn", ("speechssl._hub", "speechssl.hub"))] == [
        f"speechssl.nn.layers -> speechssl.hub ({fake['speechssl'] / 'nn/layers.py'}:2)"]


def test_detects_core_importing_upstream(fake: dict[str, Path]) -> None:
    _write(fake["speechssl"], {"registry.py": "def f():\n    import speechssl.upstream.alpha.model\n"})
    bad = core_violations(build_graph(fake))
    assert [(e.src, e.dst, e.line) for e in bad] == [("speechssl.registry", "speechssl.upstream.alpha.model", 2)]


def test_detects_core_importing_downstream_by_string(fake: dict[str, Path]) -> None:
    _write(fake["speechssl"], {"hub.py": "from importlib import import_module\nimport_module('speechssl.downstream')\n"})
    bad = core_violations(build_graph(fake))
    assert [(e.src, e.dst) for e in bad] == [("speechssl.hub", DOWNSTREAM)]


def test_detects_method_importing_method(fake: dict[str, Path]) -> None:
    _write(fake[UPSTREAM], {"beta/model.py": "from speechssl.upstream.alpha.model import M\n"})
    bad = cross_package_violations(build_graph(fake), UPSTREAM)
    assert [(e.src, e.dst) for e in bad] == [("speechssl.upstream.beta.model", "speechssl.upstream.alpha.model")]


def test_detects_method_importing_method_relatively(fake: dict[str, Path]) -> None:
    _write(fake[UPSTREAM], {"beta/model.py": "from ..alpha import model\n"})
    bad = cross_package_violations(build_graph(fake), UPSTREAM)
    assert [(e.src, e.dst) for e in bad] == [("speechssl.upstream.beta.model", "speechssl.upstream.alpha.model")]


def test_detects_task_importing_task(fake: dict[str, Path]) -> None:
    _write(fake[DOWNSTREAM], {"ks/task.py": "from speechssl.downstream.sd import task\n"})
    bad = cross_package_violations(build_graph(fake), DOWNSTREAM)
    assert [(e.src, e.dst) for e in bad] == [("speechssl.downstream.ks.task", "speechssl.downstream.sd.task")]


def test_detects_downstream_importing_a_method(fake: dict[str, Path]) -> None:
    _write(fake[DOWNSTREAM], {"common.py": "from speechssl.upstream.alpha import M\n"})
    bad = layer_violations(build_graph(fake), DOWNSTREAM, (UPSTREAM,))
    assert [(e.src, e.dst) for e in bad] == [("speechssl.downstream.common", "speechssl.upstream.alpha")]


def test_detects_data_importing_train(fake: dict[str, Path]) -> None:
    _write(fake["speechssl"], {"data/collate.py": "from speechssl.train import Trainer\n"})
    g = build_graph(fake)
    bad = layer_violations(g, "speechssl.data", ("speechssl.train",))
    assert [(e.src, e.dst) for e in bad] == [("speechssl.data.collate", "speechssl.train")]
    # and the loop it closes: train/__init__ -> trainer -> data.dataset -> data.collate -> train
    assert len(find_cycles(g)) == 1


def test_detects_nn_importing_private_hub(fake: dict[str, Path]) -> None:
    _write(fake["speechssl"], {"nn/layers.py": "def cache():\n    from speechssl._hub.zoo import model_home\n"})
    bad = layer_violations(build_graph(fake), "speechssl.nn", ("speechssl._hub", "speechssl.hub"))
    assert [(e.src, e.dst, e.line) for e in bad] == [("speechssl.nn.layers", "speechssl._hub.zoo", 2)]


def test_detects_bare_upstream_import(fake: dict[str, Path]) -> None:
    _write(fake[UPSTREAM], {"beta/model.py": "from upstream.alpha import model\n"})
    g = build_graph(fake)
    assert [(e.src, e.dst) for e in g.bare] == [("speechssl.upstream.beta.model", "upstream.alpha")]
    assert [(e.src, e.dst) for e in cross_package_violations(g, UPSTREAM)] == [
        ("speechssl.upstream.beta.model", "speechssl.upstream.alpha.model")]
