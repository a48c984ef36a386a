"""Check that genlab's imports point one way: print each package's layer and every back-edge (exit 1 if any)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "genlab"

# Lower layers never import higher ones; leaves (same rank) never import each other.
LAYERS = [
    ("base", ["genlab", "genlab.types", "genlab.errors", "genlab.safeio", "genlab.device", "genlab.pixels", "genlab.viz",
              "genlab.configs", "genlab.progress"]),
    ("leaves", ["genlab.nets", "genlab.data", "genlab.metrics"]),
    ("models", ["genlab.models"]),
    ("engine", ["genlab.engine"]),
    ("commands", ["genlab.config", "genlab.commands", "genlab.cli", "genlab.__main__"]),
]


def package(module: str) -> str:
    """The entry of LAYERS a module belongs to (longest prefix)."""
    best = ""
    for _, names in LAYERS:
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > len(best):
                best = n
    return best


def rank(pkg: str) -> int:
    return next(i for i, (_, names) in enumerate(LAYERS) if pkg in names)


def imports(path: Path) -> set[str]:
    """genlab modules a file imports, at any depth (lazy imports inside functions count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genlab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if (ROOT.parent / node.module.replace(".", "/") / a.name).exists()
                       or (ROOT.parent / (node.module.replace(".", "/") + "/" + a.name + ".py")).exists())
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("genlab"))
    return out


def main() -> int:
    bad = []
    edges: dict[tuple[str, str], int] = {}
    for path in sorted(ROOT.rglob("*.py")):
        mod = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        src = package(mod)
        for target in imports(path):
            dst = package(target)
            if not dst or dst == src or dst == "genlab":
                continue
            edges[(src, dst)] = edges.get((src, dst), 0) + 1
            rs, rd = rank(src), rank(dst)
            if rd > rs or (rd == rs and LAYERS[rs][0] == "leaves") or (rd == rs == 0 and dst != "genlab.errors"):
                bad.append(f"{mod} -> {target}")
    for name, pkgs in LAYERS:
        print(f"{name:9s} {', '.join(pkgs)}")
    print("edges (importer -> imported: files):")
    for (s, d), n in sorted(edges.items(), key=lambda e: (rank(e[0][0]), e[0])):
        print(f"  {s} -> {d}: {n}")
    print("back-edges:", "none" if not bad else "")
    for b in bad:
        print("  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
