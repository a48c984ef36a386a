"""report.html: one self-contained page with the sortable metric table, each configuration's final sample
grid (the first seed's) and the plots; checked as HTML, and in a real headless Chromium that every row and
every image is rendered, that sorting works, with a screenshot saved."""

from __future__ import annotations

import base64
import io
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli

SWEEP = ["train", "-m", "model=gan,wgan,wgan_gp", "seed=0,1", "dataset=ring8", "trainer=debug",
         "trainer.progress=false", "trainer.eval_every=2", "trainer.eval_samples=200", "trainer.num_threads=1",
         "model.generator.hidden=16", "model.discriminator.hidden=16", "dataset.n_train=512", "dataset.n_test=256",
         "hydra.sweep.dir=sweep"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A 3-configuration x 2-seed sweep on ring8 and its report folder."""
    tmp = tmp_path_factory.mktemp("report")
    r = run_cli(SWEEP, tmp)
    assert r.returncode == 0, r.stderr
    r = run_cli(["report", "sweep", "--out", "rep"], tmp)
    assert r.returncode == 0, r.stderr
    assert "report.html" in r.stdout
    return tmp / "rep"


class Page(HTMLParser):
    """The table rows, the images and any reference to another file of one HTML page."""

    def __init__(self):
        super().__init__()
        self.rows, self.imgs, self.external, self.headers = [], [], [], []
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append(a.get("data-sort"))
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.rows.append(self._row)
        if tag == "tr":
            self._row = None


@pytest.mark.slow
def test_report_html_is_self_contained_with_rows_grids_and_plots(report):
    page = Page()
    page.feed((report / "report.html").read_text())
    assert page.external == []  # nothing outside the file: images are data: URIs, style and script inline
    assert sorted(r[0] for r in page.rows) == ["model=gan", "model=wgan", "model=wgan_gp"]
    assert all(r[1] == "2" for r in page.rows)  # two seeds per configuration
    grids = [i for i in page.imgs if i["alt"].startswith("samples of")]
    plots = [i for i in page.imgs if not i["alt"].startswith("samples of")]
    assert [g["alt"] for g in grids] == ["samples of model=gan", "samples of model=wgan", "samples of model=wgan_gp"]
    assert len(plots) == len(list(report.glob("report_*.png"))) >= 1
    sweep = report.parent / "sweep"
    for g in grids:  # each grid is the first seed's final grid, byte for byte
        png = base64.b64decode(g["src"].split(",", 1)[1])
        assert Image.open(io.BytesIO(png)).size[0] > 0
        label = g["alt"].removeprefix("samples of ")
        first = next(j for j in sorted(sweep.iterdir(), key=lambda p: p.name) if j.is_dir()
                     and f"{label}\n" in (j / ".hydra" / "overrides.yaml").read_text().replace("- ", "")
                     and "seed=0" in (j / ".hydra" / "overrides.yaml").read_text())
        assert png == (first / "samples" / "step_000004.png").read_bytes()


def _browser():
    """A headless Chromium through its driver, or a skip (locally) / failure (CI) saying what is missing."""
    missing = []
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip install -e '.[browser]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        missing.append("Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs them")
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1800"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.slow
def test_report_html_renders_in_a_headless_browser(report):
    from selenium.webdriver.common.by import By

    browser = _browser()
    try:
        browser.get((report / "report.html").resolve().as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")
        assert len(rows) == 3
        for row in rows:
            assert row.is_displayed() and row.size["height"] > 0 and row.size["width"] > 0
        imgs = browser.find_elements(By.TAG_NAME, "img")
        assert len(imgs) == 3 + len(list(report.glob("report_*.png")))
        for img in imgs:  # loaded, decoded and laid out with a non-zero size
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img), \
                img.get_attribute("alt")
            assert img.size["width"] > 0 and img.size["height"] > 0, img.get_attribute("alt")
        # Sorting: click a metric column twice and the rows follow its values, both ways.
        head = browser.find_elements(By.CSS_SELECTOR, "#metrics thead th")
        col = next(i for i, h in enumerate(head) if h.text.startswith("modes"))
        for direction in ("ascending", "descending"):
            head[col].click()
            assert head[col].get_attribute("aria-sort") == direction
            values = [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-sort"))
                      for r in browser.find_elements(By.CSS_SELECTOR, "#metrics tbody tr")]
            assert values == sorted(values, reverse=direction == "descending")
        shot = report / "report_screenshot.png"
        browser.get_screenshot_as_file(str(shot))
        keep = os.environ.get("GENLAB_SCREENSHOT_DIR")  # where CI or a person wants to look at it
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / shot.name)
    finally:
        browser.quit()
    assert Image.open(shot).size[0] >= 1000
