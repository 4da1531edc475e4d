"""The layers of ``qmp_exporter`` as a checked contract, read from the source with ``ast``.

Every ``import`` counts, at module level or inside a function. The rules:

* ``qmp`` is a library of its own: it loads nothing else of the package;
* the entry points are on top: nothing imports ``cli`` but ``__main__``, nothing imports
  ``app`` but the entry points (``__main__``, ``cli``);
* ``tools`` and ``sim`` load no server code (``app``, ``web``, ``exposition.render``,
  ``fleet.hub``, ``polling.monitors``, ``alerting``), not even through another module;
* ``collectors`` load only ``qmp``, ``host``, ``textformat`` and themselves;
* ``host`` loads only ``textformat`` and itself;
* ``web.http`` (the HTTP server) loads only itself;
* no two modules import each other, directly or round a longer cycle.

And three rules read from the source itself:

* ``qmp`` uses only the standard library's networking, JSON, asyncio and plain-data modules
  (no ``os``: no process reading; it asks no one who is at the other end);
* nothing outside ``host`` names a ``/proc`` or ``/sys`` path: every read of them is there;
* the app wires the renderer (subscribes it to the fleet and to discovery) and serves its
  chunks; no other module imports it, and nothing pushes into it.

"Load" follows imports transitively and counts the package ``__init__`` modules an import
runs. A violation names each import on the way with its file and line.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = "qmp_exporter"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

SERVER = (
    "qmp_exporter.app",
    "qmp_exporter.web",
    "qmp_exporter.exposition.render",
    "qmp_exporter.fleet.hub",
    "qmp_exporter.polling.monitors",
    "qmp_exporter.alerting",
)
COLLECTORS_MAY_LOAD = (
    "qmp_exporter.collectors",
    "qmp_exporter.host",
    "qmp_exporter.qmp",
    "qmp_exporter.textformat",
)
HOST_MAY_LOAD = ("qmp_exporter.host", "qmp_exporter.textformat")
HTTP = "qmp_exporter.web.http"
#: The standard-library modules ``qmp`` may import: networking, JSON, asyncio, plain data.
QMP_STDLIB = frozenset(
    {"__future__", "asyncio", "collections", "dataclasses", "errno", "json", "logging",
     "math", "socket", "threading", "time", "typing", "enum", "abc", "contextlib",
     "functools", "itertools", "re", "types"}
)  # fmt: skip
#: Where the renderer is made and wired, and what may be asked of it there.
RENDERER_OWNER = "qmp_exporter.app"
RENDERER_SERVES = frozenset({"chunks", "gzip_chunks"})


@dataclass(frozen=True, order=True)
class Import:
    """One import statement of the package's own code: who imports what, where."""

    importer: str
    imported: str
    file: str
    line: int
    #: Inside ``if TYPE_CHECKING:``: read by the type checker, never run.
    type_only: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} imports {self.imported}"


#: Module name -> the package modules it imports.
Graph = Mapping[str, Sequence[Import]]


def within(module: str, layer: str) -> bool:
    """True if ``module`` is ``layer`` or inside it."""
    return module == layer or module.startswith(layer + ".")


def within_any(module: str, layers: Iterable[str]) -> bool:
    return any(within(module, layer) for layer in layers)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, list[Import]]:
    """The import graph of the package under ``package_dir``, from its source."""
    files = {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, list[Import]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        where = str(path.relative_to(package_dir.parent))
        found: list[Import] = []
        tree = ast.parse(path.read_text(), str(path))
        type_only = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, module, is_package, files):
                if within(target, package_dir.name):
                    found.append(
                        Import(module, target, where, node.lineno, node.lineno in type_only)
                    )
        graph[module] = sorted(set(found), key=lambda i: (i.line, i.imported))
    return graph


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """The lines inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Mapping[str, Path]
) -> list[str]:
    """The modules one statement imports (``from P import m`` imports module ``P.m`` when
    there is one, else ``P``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base_parts = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join([*base_parts, node.module] if node.module else base_parts)
    else:
        base = node.module or ""
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def parents(module: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``module``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def loads(
    graph: Graph, start: str, stop: Callable[[str], bool] = lambda module: False
) -> dict[str, list[Import]]:
    """Every package module that importing ``start`` runs, each with the chain of imports
    that leads there (empty for ``start`` and its parent packages). The imports of a module
    for which ``stop`` is true are not followed."""
    chains: dict[str, list[Import]] = {start: []}
    for package in parents(start):
        chains.setdefault(package, [])
    queue = deque(chains)
    while queue:
        module = queue.popleft()
        if chains[module] and stop(module):
            continue
        for edge in graph.get(module, ()):
            for reached in [*parents(edge.imported), edge.imported]:
                if reached not in chains:
                    chains[reached] = [*chains[module], edge]
                    queue.append(reached)
    return chains


def forbidden_loads(
    graph: Graph, sources: Sequence[str], forbidden: Callable[[str], bool]
) -> list[str]:
    """Each import that first brings a forbidden module into a module inside ``sources``,
    once, with the shortest chain of imports that leads to it (what the forbidden module
    imports in turn is not reported again)."""
    shortest: dict[Import, tuple[int, str]] = {}
    for module in sorted(m for m in graph if within_any(m, sources)):
        for reached, chain in sorted(loads(graph, module, stop=forbidden).items()):
            if not chain or not forbidden(reached):
                continue
            steps = "; then ".join(str(edge) for edge in chain)
            found = (len(chain), f"{module} loads {chain[-1].imported}: {steps}")
            shortest[chain[-1]] = min(shortest.get(chain[-1], found), found)
    return sorted(message for _, message in shortest.values())


def qmp_outside_imports(graph: Graph) -> list[str]:
    """``qmp`` loads nothing of the package but itself (and the root package it sits in)."""
    return forbidden_loads(
        graph, ["qmp_exporter.qmp"], lambda m: m != PACKAGE and not within(m, "qmp_exporter.qmp")
    )


def entry_point_imports(graph: Graph) -> list[str]:
    """Imports of ``cli`` from anywhere but ``__main__``, of ``app`` from anywhere but the
    entry points."""
    allowed = {
        "qmp_exporter.cli": {"qmp_exporter.__main__"},
        "qmp_exporter.app": {"qmp_exporter.__main__", "qmp_exporter.cli"},
    }
    return [
        str(edge)
        for edges in graph.values()
        for edge in edges
        for target, importers in allowed.items()
        if within(edge.imported, target) and edge.importer not in importers
    ]


def server_imports_of_tools_and_sim(graph: Graph) -> list[str]:
    """Server code that ``tools`` or ``sim`` load."""
    return forbidden_loads(
        graph, ["qmp_exporter.tools", "qmp_exporter.sim"], lambda m: within_any(m, SERVER)
    )


def loads_beyond(graph: Graph, layer: str, may_load: Sequence[str]) -> list[str]:
    """What ``layer`` loads besides the layers ``may_load`` (the packages those sit in run
    their ``__init__``, which is followed too)."""
    allowed_packages = {p for allowed in may_load for p in parents(allowed)}
    return forbidden_loads(
        graph, [layer], lambda m: m not in allowed_packages and not within_any(m, may_load)
    )


def collectors_outside_imports(graph: Graph) -> list[str]:
    """What ``collectors`` load besides ``qmp``, ``host``, ``textformat`` and themselves."""
    return loads_beyond(graph, "qmp_exporter.collectors", COLLECTORS_MAY_LOAD)


def host_outside_imports(graph: Graph) -> list[str]:
    """What ``host`` loads besides ``textformat`` and itself."""
    return loads_beyond(graph, "qmp_exporter.host", HOST_MAY_LOAD)


def http_outside_imports(graph: Graph) -> list[str]:
    """What the HTTP server (``web.http``) loads besides itself: it knows no route, metric
    or web config."""
    return loads_beyond(graph, HTTP, (HTTP,))


def _sources(package_dir: Path = PACKAGE_DIR) -> dict[str, tuple[str, ast.Module]]:
    """Module name -> (file as the graph names it, its syntax tree)."""
    return {
        module_name(path, package_dir): (
            str(path.relative_to(package_dir.parent)),
            ast.parse(path.read_text(), str(path)),
        )
        for path in sorted(package_dir.rglob("*.py"))
    }


def qmp_stdlib_imports(sources: Mapping[str, tuple[str, ast.Module]]) -> list[str]:
    """Standard-library imports of ``qmp`` outside :data:`QMP_STDLIB`."""
    problems = []
    for module, (file, tree) in sources.items():
        if not within(module, "qmp_exporter.qmp"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != PACKAGE and top not in QMP_STDLIB:
                    problems.append(f"{file}:{node.lineno}: {module} imports {name}")
    return problems


def proc_and_sys_outside_host(sources: Mapping[str, tuple[str, ast.Module]]) -> list[str]:
    """String constants (f-string parts included; docstrings not) naming a ``/proc`` or
    ``/sys`` path in a module outside ``host``."""
    problems = []
    for module, (file, tree) in sources.items():
        if within(module, "qmp_exporter.host"):
            continue
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and node.value.lstrip("f").startswith(("/proc", "/sys"))
            ):
                problems.append(f"{file}:{node.lineno}: {module} names {node.value!r}")
    return problems


def renderer_side_doors(sources: Mapping[str, tuple[str, ast.Module]]) -> list[str]:
    """Modules besides the app that import ``FleetRenderer``, and the app's uses of its
    renderer other than subscribing it and serving its chunks."""
    problems = []
    for module, (file, tree) in sources.items():
        if module in (RENDERER_OWNER, "qmp_exporter.exposition.render"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(
                alias.name == "FleetRenderer" for alias in node.names
            ):
                problems.append(f"{file}:{node.lineno}: {module} imports FleetRenderer")
    file, tree = sources[RENDERER_OWNER]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "renderer"
            and node.attr not in RENDERER_SERVES
        ):
            problems.append(f"{file}:{node.lineno}: the app asks the renderer for {node.attr}")
    return problems


def import_cycles(graph: Graph) -> list[str]:
    """One cycle from each group of modules that import each other at run time, as its
    imports. A type-only import (under ``if TYPE_CHECKING:``) is how a module names a type of
    a module that uses it; it is never run, so it makes no cycle (as import-linter's
    ``exclude_type_checking_imports``). The layer rules above count it all the same."""
    graph = {m: [e for e in edges if not e.type_only] for m, edges in graph.items()}
    problems = []
    for group in _strongly_connected(graph):
        members = set(group)
        start = min(group)
        if len(group) == 1 and not any(e.imported == start for e in graph.get(start, ())):
            continue
        cycle = _path_back(graph, start, members)
        problems.append(" -> ".join(str(edge) for edge in cycle))
    return problems


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    nodes = sorted(set(graph) | {e.imported for edges in graph.values() for e in edges})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted({e.imported for e in graph.get(root, ())})))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    targets = sorted({e.imported for e in graph.get(successor, ())})
                    work.append((successor, iter(targets)))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(sorted(group))
    return groups


def _path_back(graph: Graph, start: str, members: set[str]) -> list[Import]:
    """The shortest chain of imports from ``start`` back to itself inside ``members``."""
    came_by: dict[str, Import] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for edge in graph.get(module, ()):
            if edge.imported not in members:
                continue
            if edge.imported == start:
                chain = [edge]
                while chain[0].importer != start:
                    chain.insert(0, came_by[chain[0].importer])
                return chain
            if edge.imported not in came_by:
                came_by[edge.imported] = edge
                queue.append(edge.imported)
    raise AssertionError(f"no cycle through {start}")


RULES: dict[str, Callable[[Graph], list[str]]] = {
    "qmp imports only itself": qmp_outside_imports,
    "only the entry points import cli and app": entry_point_imports,
    "tools and sim import no server code": server_imports_of_tools_and_sim,
    "collectors import only qmp, host, textformat and themselves": (collectors_outside_imports),
    "host imports only textformat and itself": host_outside_imports,
    "web.http imports only itself": http_outside_imports,
    "no import cycles": import_cycles,
}


# -- the contract, on the real tree --------------------------------------------------------


@cache
def real_graph() -> Graph:
    """The package's import graph, read once for all the contract tests (none changes it)."""
    return read_graph()


@cache
def real_sources() -> Mapping[str, tuple[str, ast.Module]]:
    """The package's syntax trees, read once for all the contract tests."""
    return _sources()


def assert_none(problems: list[str]) -> None:
    assert not problems, "\n".join(["layer contract broken:", *problems])


def test_the_graph_is_read_from_the_whole_package() -> None:
    graph = real_graph()
    assert "qmp_exporter.qmp.client" in graph
    assert "qmp_exporter.__main__" in graph
    main_imports = [(e.imported, e.line) for e in graph["qmp_exporter.__main__"]]
    assert ("qmp_exporter.cli", 3) in main_imports


def test_qmp_imports_only_itself() -> None:
    assert_none(qmp_outside_imports(real_graph()))


def test_only_the_entry_points_import_cli_and_app() -> None:
    assert_none(entry_point_imports(real_graph()))


def test_tools_and_sim_import_no_server_code() -> None:
    assert_none(server_imports_of_tools_and_sim(real_graph()))


def test_collectors_import_only_qmp_textformat_and_themselves() -> None:
    assert_none(collectors_outside_imports(real_graph()))


def test_host_imports_only_textformat_and_itself() -> None:
    assert_none(host_outside_imports(real_graph()))


def test_the_http_server_imports_only_itself() -> None:
    assert_none(http_outside_imports(real_graph()))


def test_qmp_uses_only_networking_json_and_asyncio_of_the_standard_library() -> None:
    assert_none(qmp_stdlib_imports(real_sources()))


def test_nothing_outside_host_names_proc_or_sys() -> None:
    assert_none(proc_and_sys_outside_host(real_sources()))


def test_only_the_app_wires_the_renderer() -> None:
    assert_none(renderer_side_doors(real_sources()))


def test_the_source_rules_name_what_breaks_them(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "qmp").mkdir(parents=True)
    (package / "qmp" / "client.py").write_text("import os\nimport socket\n")
    (package / "tools").mkdir()
    (package / "tools" / "top.py").write_text(
        '"""Reads /proc."""\nfrom qmp_exporter.exposition.render import FleetRenderer\n'
        'STAT = f"/proc/{1}/stat"\n'
    )
    (package / "app.py").write_text(
        "class App:\n    def go(self):\n        self.renderer.chunks()\n"
        "        self.renderer.scanned(1)\n"
    )
    sources = _sources(package)
    assert qmp_stdlib_imports(sources) == [
        "qmp_exporter/qmp/client.py:1: qmp_exporter.qmp.client imports os"
    ]
    assert proc_and_sys_outside_host(sources) == [
        "qmp_exporter/tools/top.py:3: qmp_exporter.tools.top names '/proc/'"
    ]
    assert renderer_side_doors(sources) == [
        "qmp_exporter/tools/top.py:2: qmp_exporter.tools.top imports FleetRenderer",
        "qmp_exporter/app.py:4: the app asks the renderer for scanned",
    ]


def test_no_import_cycles() -> None:
    assert_none(import_cycles(real_graph()))


# -- the checker itself, on synthetic graphs -----------------------------------------------


def synthetic(*edges: tuple[str, str, int]) -> dict[str, list[Import]]:
    graph: dict[str, list[Import]] = {}
    for importer, imported, line in edges:
        file = importer.replace(".", "/") + ".py"
        graph.setdefault(importer, []).append(Import(importer, imported, file, line))
        graph.setdefault(imported, [])
    return graph


def test_each_rule_names_the_offending_import_with_file_and_line() -> None:
    graph = synthetic(
        ("qmp_exporter.qmp.client", "qmp_exporter.config", 11),
        ("qmp_exporter.polling.poller", "qmp_exporter.app", 12),
        ("qmp_exporter.tools.inventory", "qmp_exporter.polling.poller", 13),
        ("qmp_exporter.collectors.block", "qmp_exporter.exposition.render", 14),
        ("qmp_exporter.web.http.server", "qmp_exporter.web.webconfig.guard", 15),
    )
    assert qmp_outside_imports(graph) == [
        "qmp_exporter.qmp.client loads qmp_exporter.config: qmp_exporter/qmp/client.py:11: "
        "qmp_exporter.qmp.client imports qmp_exporter.config"
    ]
    assert entry_point_imports(graph) == [
        "qmp_exporter/polling/poller.py:12: qmp_exporter.polling.poller imports qmp_exporter.app"
    ]
    assert server_imports_of_tools_and_sim(graph) == [
        "qmp_exporter.tools.inventory loads qmp_exporter.app: "
        "qmp_exporter/tools/inventory.py:13: qmp_exporter.tools.inventory imports "
        "qmp_exporter.polling.poller; then qmp_exporter/polling/poller.py:12: "
        "qmp_exporter.polling.poller imports qmp_exporter.app"
    ]
    assert collectors_outside_imports(graph) == [
        "qmp_exporter.collectors.block loads qmp_exporter.exposition.render: "
        "qmp_exporter/collectors/block.py:14: qmp_exporter.collectors.block imports "
        "qmp_exporter.exposition.render"
    ]
    assert http_outside_imports(graph) == [
        "qmp_exporter.web.http.server loads qmp_exporter.web.webconfig.guard: "
        "qmp_exporter/web/http/server.py:15: qmp_exporter.web.http.server imports "
        "qmp_exporter.web.webconfig.guard"
    ]


def test_a_package_init_on_the_way_counts_as_loaded() -> None:
    graph = synthetic(
        ("qmp_exporter.sim.simulator", "qmp_exporter.web.landing", 5),
        ("qmp_exporter.tools.shell", "qmp_exporter.polling.discovery", 6),
        ("qmp_exporter.polling", "qmp_exporter.polling.monitors", 7),
    )
    assert server_imports_of_tools_and_sim(graph) == [
        "qmp_exporter.sim.simulator loads qmp_exporter.web.landing: "
        "qmp_exporter/sim/simulator.py:5: qmp_exporter.sim.simulator imports "
        "qmp_exporter.web.landing",
        "qmp_exporter.tools.shell loads qmp_exporter.polling.monitors: "
        "qmp_exporter/tools/shell.py:6: qmp_exporter.tools.shell imports "
        "qmp_exporter.polling.discovery; then qmp_exporter/polling.py:7: "
        "qmp_exporter.polling imports qmp_exporter.polling.monitors",
    ]


def test_allowed_imports_pass() -> None:
    graph = synthetic(
        ("qmp_exporter.__main__", "qmp_exporter.cli", 1),
        ("qmp_exporter.cli", "qmp_exporter.app", 2),
        ("qmp_exporter.app", "qmp_exporter.polling.fleet", 3),
        ("qmp_exporter.collectors.block", "qmp_exporter.qmp", 4),
        ("qmp_exporter.collectors.block", "qmp_exporter.textformat", 5),
        ("qmp_exporter.qmp", "qmp_exporter.qmp.client", 6),
        ("qmp_exporter.tools.inventory", "qmp_exporter.config", 7),
    )
    assert {name: rule(graph) for name, rule in RULES.items()} == {name: [] for name in RULES}


def test_a_cycle_is_reported_as_its_imports() -> None:
    graph = synthetic(
        ("qmp_exporter.polling.poller", "qmp_exporter.polling.state", 20),
        ("qmp_exporter.polling.state", "qmp_exporter.polling.fleet", 30),
        ("qmp_exporter.polling.fleet", "qmp_exporter.polling.poller", 40),
        ("qmp_exporter.alerting", "qmp_exporter.alerting", 50),
        ("qmp_exporter.web.server", "qmp_exporter.polling.poller", 60),
    )
    assert import_cycles(graph) == [
        "qmp_exporter/alerting.py:50: qmp_exporter.alerting imports qmp_exporter.alerting",
        "qmp_exporter/polling/fleet.py:40: qmp_exporter.polling.fleet imports "
        "qmp_exporter.polling.poller -> qmp_exporter/polling/poller.py:20: "
        "qmp_exporter.polling.poller imports qmp_exporter.polling.state -> "
        "qmp_exporter/polling/state.py:30: qmp_exporter.polling.state imports "
        "qmp_exporter.polling.fleet",
    ]


def test_relative_and_function_level_imports_are_read(tmp_path: Path) -> None:
    package = tmp_path / "qmp_exporter"
    (package / "qmp").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "qmp" / "__init__.py").write_text("from . import client\n")
    (package / "qmp" / "client.py").write_text(
        "import json\n\n\ndef later() -> None:\n    from ..web import server\n"
    )
    (package / "web").mkdir()
    (package / "web" / "__init__.py").write_text("")
    (package / "web" / "server.py").write_text("from qmp_exporter.qmp.client import later\n")
    graph = read_graph(package)
    assert [str(e) for e in graph["qmp_exporter.qmp"]] == [
        "qmp_exporter/qmp/__init__.py:1: qmp_exporter.qmp imports qmp_exporter.qmp.client"
    ]
    assert [str(e) for e in graph["qmp_exporter.qmp.client"]] == [
        "qmp_exporter/qmp/client.py:5: qmp_exporter.qmp.client imports qmp_exporter.web.server"
    ]
    assert qmp_outside_imports(graph) == [
        "qmp_exporter.qmp.client loads qmp_exporter.web.server: "
        "qmp_exporter/qmp/client.py:5: qmp_exporter.qmp.client imports qmp_exporter.web.server"
    ]
    assert import_cycles(graph) == [
        "qmp_exporter/qmp/client.py:5: qmp_exporter.qmp.client imports qmp_exporter.web.server"
        " -> qmp_exporter/web/server.py:1: qmp_exporter.web.server imports "
        "qmp_exporter.qmp.client"
    ]


def test_a_type_only_back_reference_is_no_cycle_but_still_an_import(tmp_path: Path) -> None:
    package = tmp_path / "qmp_exporter"
    (package / "sim").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sim" / "__init__.py").write_text("")
    (package / "sim" / "session.py").write_text("from qmp_exporter.sim import hooks\n")
    (package / "sim" / "hooks.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from qmp_exporter.sim.session import Session\n"
    )
    graph = read_graph(package)
    assert [(e.imported, e.type_only) for e in graph["qmp_exporter.sim.hooks"]] == [
        ("qmp_exporter.sim.session", True)
    ]
    assert import_cycles(graph) == []
    (package / "sim" / "hooks.py").write_text("from qmp_exporter.sim.session import Session\n")
    assert len(import_cycles(read_graph(package))) == 1
