"""The docs: the site builds with `mkdocs build --strict` (a broken link or a page missing from nav fails),
every command block fenced as {.bash .cheap} runs green, and the README stays a short front door whose
links all resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_mnist

DOCS = REPO / "docs"
CHEAP = re.compile(r"^```\{\.bash \.cheap\}\n(.*?)^```\n", re.S | re.M)


def cheap_blocks(path: Path) -> list[str]:
    """The cheap command blocks of one markdown file, in order."""
    return CHEAP.findall(path.read_text())


def pages_with_cheap_blocks() -> list[Path]:
    return [p for p in sorted([REPO / "README.md", *DOCS.rglob("*.md")]) if cheap_blocks(p)]


def test_the_convention_is_found():
    blocks = [b for p in pages_with_cheap_blocks() for b in cheap_blocks(p)]
    assert len(blocks) >= 5
    assert all("genlab " in b for b in blocks)
    sample = "text\n\n```{.bash .cheap}\ngenlab --help\n```\n\n```bash\ngenlab train\n```\n"
    assert CHEAP.findall(sample) == ["genlab --help\n"]


@pytest.mark.slow  # a page's blocks are several CLI runs: 15 to 60 s each on a quiet 2-core machine
@pytest.mark.parametrize("page", pages_with_cheap_blocks(), ids=lambda p: str(p.relative_to(REPO)))
def test_cheap_commands_of_the_docs_run(page, tmp_path):
    data = tmp_path / "data"
    make_mnist(data, "MNIST")
    make_mnist(data, "FashionMNIST", seed=1)
    work = tmp_path / "work"
    work.mkdir()
    # `genlab` is this checkout's CLI; debug runs stay quiet and single-threaded.
    script = ("set -euo pipefail\n"
              f'genlab() {{ "{sys.executable}" -m genlab "$@"; }}\n'
              + "".join(f"echo '+ block {i}'\n{b}" for i, b in enumerate(cheap_blocks(page))))
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENLAB_DATA": str(data), "GENLAB_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{page.relative_to(REPO)}: a cheap command failed\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the Material theme is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    for page in DOCS.rglob("*.md"):  # every page is built (strict nav: none is left out)
        rel = page.relative_to(DOCS).with_suffix("")
        built = tmp_path / "site" / (rel.parent if rel.name == "index" else rel) / "index.html"
        assert built.is_file(), page


def test_mkdocs_strict_fails_on_a_broken_link(tmp_path):
    pytest.importorskip("material", reason="the Material theme is not installed (pip install -e '.[docs]')")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\nsee [there](missing.md)\n")
    cfg = (REPO / "mkdocs.yml").read_text().split("\nnav:")[0] + "\nnav:\n  - Home: index.md\n"
    (tmp_path / "mkdocs.yml").write_text(cfg)
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode != 0 and "missing.md" in r.stderr


def test_readme_is_a_short_front_door_with_working_links():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [l for l in links if not l.startswith(("http://", "https://", "mailto:"))]
    assert local, "the README links into docs/"
    for link in local:
        assert (REPO / link).exists(), link
    nav = (REPO / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"
