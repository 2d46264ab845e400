"""The rules of ../shared/DESIGN.md that a test can hold."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import tensorkiln
from tensorkiln.ops import all_ops
from tensorkiln.tactics import BACKENDS, ops_without_tactic

PKG = Path(tensorkiln.__file__).parent

# folder -> our packages it may import (DESIGN.md's table); '*' is anything.
ALLOWED = {
    "ir": {"errors"},
    "ops": {"ir", "errors"},
    "frontends": {"ir", "ops", "errors"},
    "passes": {"ir", "ops", "errors"},
    "precision": {"ir", "ops", "passes", "errors"},
    "tactics": {"ir", "ops", "errors"},
    "planner": {"ir", "errors"},
    "engine": {"ir", "errors", "version"},
    "runtime": {"engine", "tactics", "ir", "ops", "planner", "errors"},
    "builder": {"ir", "ops", "frontends", "passes", "precision", "tactics", "planner", "engine", "errors", "network",
                "version"},
    "serve": {"runtime", "engine", "ir", "errors"},
    # Accuracy debugging tools (compare, bisect) sit beside the CLI: they drive the whole stack.
    "debug": {"ir", "ops", "frontends", "passes", "precision", "tactics", "planner", "builder", "engine", "runtime",
              "testing", "errors", "network", "api", "version"},
}


def _our_imports(path: Path) -> set[str]:
    rel = path.relative_to(PKG).parts
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("tensorkiln."):
                    found.add(node.module.split(".")[1])
            else:
                base = list(rel[:-1])[: len(rel) - node.level]
                target = base + (node.module.split(".") if node.module else [])
                if not target:
                    found.update(a.name for a in node.names)
                else:
                    found.add(target[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tensorkiln."):
                    found.add(a.name.split(".")[1])
    return found


def test_imports_flow_one_way():
    bad = []
    for folder, allowed in ALLOWED.items():
        for path in (PKG / folder).rglob("*.py"):
            extra = _our_imports(path) - allowed - {folder}
            if extra:
                bad.append(f"{path.relative_to(PKG)} imports {sorted(extra)}")
    assert not bad, "\n".join(bad)


def test_runtime_does_not_import_onnx_frontends_or_passes():
    code = ("import sys, tensorkiln.runtime\n"
            "bad = [m for m in sys.modules if m == 'onnx' or m.startswith(('onnx.', 'tensorkiln.frontends'))]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    for path in (PKG / "runtime").rglob("*.py"):
        text = path.read_text()
        assert "import onnx" not in text and "frontends" not in text and "passes" not in text, path


def test_every_registered_op_has_a_tactic_on_every_backend():
    assert len(all_ops()) > 50
    for backend in BACKENDS:
        assert ops_without_tactic(backend) == []


def test_no_pickle_anywhere_in_engine_or_runtime():
    for folder in ("engine", "runtime"):
        for path in (PKG / folder).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"import pickle|pickle\.loads?\(|(?<!safetensors\.)torch\.load\(", text), path
