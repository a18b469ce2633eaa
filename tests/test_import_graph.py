"""The package layering, read from the code's own imports (issue 15).

- No cycle between the packages of agent/ (a top-level module such as agent/reads.py
  counts as a package of its own). The command modules (`agent/<package>/cli.py`, and
  `agent/cli.py`) are the application layer that wires packages together for a command,
  so their imports are not package dependencies. (The last cycles, control <-> runtime and
  config <-> capture/vision, were removed: control defines the interface the runtime hands
  it, agent/control/target.py; the runtime assembles the file checks, agent/runtime/preflight.py.)
- agent/delivery reaches agent/policy through agent.policy.decision only: the decision
  functions and the types their signatures use. The sealed message type (Sendable) is
  made by the egress gate alone, and nothing else in agent/ constructs one.
- The outbox holds no decision code: it calls decide_read() and stores the answer.
"""
from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

AGENT = Path(__file__).resolve().parents[1] / "agent"


@functools.lru_cache(maxsize=None)   # parsed once for the four tests (read-only trees)
def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(AGENT.rglob("*.py")):
        name = ".".join(path.relative_to(AGENT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import of an agent module, wherever it sits
    (function bodies and TYPE_CHECKING blocks included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "agent":
                found.extend((f"agent.{a.name}", []) for a in node.names)
            elif node.module.startswith("agent."):
                found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.startswith("agent."))
    return found


def _package(module: str) -> str:
    return module.split(".")[1]


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, tree in _modules().items():
        if name == "agent" or name.endswith(".cli") or name == "agent.__main__":
            continue
        for target, _names in _imports(tree):
            if _package(target) != _package(name):
                graph[_package(name)].add(_package(target))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_cycle_between_packages():
    graph = package_graph()
    assert "delivery" in graph["runtime"] and "policy" in graph["delivery"]   # the graph is real
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_delivery_reaches_policy_only_through_the_decision_module():
    uses = {(name, target) for name, tree in _modules().items() if name.startswith("agent.delivery")
            for target, _ in _imports(tree) if target.startswith("agent.policy")}
    assert uses, "delivery must use the policy stage"
    assert {target for _, target in uses} == {"agent.policy.decision"}, sorted(uses)


def test_only_the_gate_creates_sendable_messages():
    makers = set()
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Sendable":
                makers.add(name)
    assert makers == {"agent.delivery.gate"}


def test_outbox_has_no_decision_code():
    tree = _modules()["agent.delivery.outbox"]
    called = {getattr(n.func, "id", getattr(n.func, "attr", None)) for n in ast.walk(tree)
              if isinstance(n, ast.Call)}
    assert "decide_read" in called
    assert not called & {"decide", "decide_all", "project_fields", "encode_payload",
                         "purpose_for", "payload_conforms", "match"}
    imported = {n for target, names in _imports(tree) if target.startswith("agent.policy")
                for n in names}
    assert imported <= {"HotlistMatcher", "Policy", "ReadDecision", "Retention", "decide_read",
                        "valid_policy"}


def test_the_cycle_check_sees_a_cycle():
    """The check above is only as good as its cycle finder: a two-package loop and a longer
    one are found, a diamond is not a cycle."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}) is None
