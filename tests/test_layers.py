"""Imports point one way (types <- nets, data, metrics <- models <- engine <- commands): scripts/layers.py
finds no back-edge, and it does find one when a leaf imports a higher layer."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_import_back_edges():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "layers.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert "back-edges: none" in r.stdout


def test_the_checker_sees_a_back_edge(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("layers", REPO / "scripts" / "layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    fake = tmp_path / "genlab" / "data"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from genlab.models.gan import GAN\n")
    monkeypatch.setattr(layers, "ROOT", tmp_path / "genlab")
    assert layers.main() == 1
