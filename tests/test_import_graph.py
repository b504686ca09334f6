"""Which package may import which: the shared package imports neither end, the sink nothing of
the vehicle's, the vehicle nothing of the sink's nor torch. Read from the source (ast), so a
lazy import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sleepsafe", "edge_agent", "cloud_sink", "models", "export", "trainer", "sleepsafe_dev")
# package → the project packages (and heavy libraries) it must never import
FORBIDDEN = {
    "sleepsafe": {
        "edge_agent",
        "cloud_sink",
        "trainer",
        "models",
        "export",
        "sleepsafe_dev",
        "torch",
        "mediapipe",
        "cv2",
    },
    # numpy and onnxruntime: the sink scores on registered models (POST /predict); never torch.
    "cloud_sink": {"edge_agent", "models", "export", "trainer", "sleepsafe_dev", "torch", "mediapipe", "cv2"},
    "edge_agent": {"cloud_sink", "models", "export", "trainer", "sleepsafe_dev", "torch"},
}


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (relative imports resolved to its package)."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(REPO).parts[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(package if node.level else (node.module or "").split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package}: no modules"
    bad = {
        str(f.relative_to(REPO)): sorted(imports_of(f) & FORBIDDEN[package])
        for f in files
        if imports_of(f) & FORBIDDEN[package]
    }
    assert not bad, bad


def test_every_package_says_what_it_is() -> None:
    for package in PACKAGES:
        init = REPO / package / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc and "placeholder" not in doc.lower(), f"{package}/__init__.py: {doc[:80]!r}"
