"""docs/architecture.md stays true of the code: its paths, names, state diagram and layers.

The document is read as text; nothing here is a stub. A renamed file, a moved function, a
new job state or transition, or a reordered layer makes one of these tests name what the
document now gets wrong.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from scheduler.jobs.states import ALLOWED, TERMINAL, JobState

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
TOP_LEVEL = ("scheduler/", "worker/", "tests/", "docs/", "bench/", "scripts/", "migrations/")

# `path/to/file.py` or `path/to/dir/` in backticks (a glob such as `scheduler/*/router.py`
# is checked to match something).
BACKTICKED_PATH = re.compile(r"`([A-Za-z0-9_.*/-]+)`")
# `name` in `path.py`: the document says `path.py` defines `name`.
NAME_IN_FILE = re.compile(r"`(\w+)`\s+in\s+`([A-Za-z0-9_/]+\.py)`")
MARKDOWN_LINK = re.compile(r"\]\(([^)#:]+\.md)\)")
MERMAID = re.compile(r"```mermaid\n(.*?)```", re.S)
STATE_EDGE = re.compile(r"^\s*(\[\*\]|\w+)\s*-->\s*(\[\*\]|\w+)\s*(?::.*)?$")
LAYER_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.+)\|\s*$")


def doc_text() -> str:
    return DOC.read_text()


def mentioned_paths(text: str) -> set[str]:
    return {
        path
        for path in BACKTICKED_PATH.findall(text)
        if path.startswith(TOP_LEVEL) and ("/" in path.rstrip("/"))
    }


def state_edges(text: str) -> set[tuple[str, str]]:
    diagrams = [d for d in MERMAID.findall(text) if d.lstrip().startswith("stateDiagram")]
    assert len(diagrams) == 1, "expected exactly one Mermaid state diagram"
    edges = set()
    for line in diagrams[0].splitlines()[1:]:
        match = STATE_EDGE.match(line)
        if match:
            edges.add((match.group(1), match.group(2)))
        else:
            assert not line.strip(), f"unparsed line in the state diagram: {line!r}"
    return edges


def test_the_document_exists_and_is_linked_from_the_readme() -> None:
    assert DOC.is_file()
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()


def test_every_path_it_names_exists() -> None:
    paths = mentioned_paths(doc_text())
    assert len(paths) > 30  # the parser found the document's paths, not nothing
    missing = sorted(
        path
        for path in paths
        if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists())
    )
    assert missing == []


def test_every_linked_document_exists() -> None:
    links = MARKDOWN_LINK.findall(doc_text())
    assert links
    assert sorted(link for link in links if not (DOC.parent / link).is_file()) == []


def test_every_name_said_to_be_in_a_file_is_defined_there() -> None:
    claims = NAME_IN_FILE.findall(doc_text())
    assert len(claims) > 10
    wrong = []
    for name, path in claims:
        source = (ROOT / path).read_text()
        defined = re.search(
            rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^{name}\s*(?::[^=]*)?=", source, re.M
        )
        if not defined:
            wrong.append(f"{name} in {path}")
    assert wrong == []


def test_the_state_diagram_has_exactly_the_job_states() -> None:
    edges = state_edges(doc_text())
    states = {state for edge in edges for state in edge} - {"[*]"}
    assert states == {state.value for state in JobState}


def test_the_state_diagram_has_exactly_the_allowed_transitions() -> None:
    edges = state_edges(doc_text())
    drawn = {(a, b) for a, b in edges if "[*]" not in (a, b)}
    allowed = {(a.value, b.value) for a, targets in ALLOWED.items() for b in targets}
    assert sorted(drawn - allowed) == [], "drawn but not allowed"
    assert sorted(allowed - drawn) == [], "allowed but not drawn"
    final = {a for a, b in edges if b == "[*]"}
    assert final == {state.value for state in TERMINAL}


def test_the_state_parser_rejects_a_wrong_diagram() -> None:
    """The checks above would fail on a diagram missing a state or holding a stray edge."""
    text = "```mermaid\nstateDiagram-v2\n    held --> running : wrong\n```\n"
    drawn = state_edges(text)
    allowed = {(a.value, b.value) for a, targets in ALLOWED.items() for b in targets}
    assert drawn == {("held", "running")}
    assert not drawn <= allowed


def test_the_layer_table_matches_the_enforced_layers() -> None:
    source = (ROOT / "tests" / "service" / "test_layers.py").read_text()
    layers = next(
        ast.literal_eval(node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "LAYERS"
    )
    enforced = {
        index: {module.replace(".", "/") + ".py" for module in layer}
        for index, layer in enumerate(layers)
    }
    documented: dict[int, set[str]] = {}
    for line in doc_text().splitlines():
        match = LAYER_ROW.match(line)
        if match:
            documented[int(match.group(1))] = set(re.findall(r"`([^`]+)`", match.group(2)))
    assert documented == enforced
