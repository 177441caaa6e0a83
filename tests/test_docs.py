"""The documentation: README stays a five-minute read that keeps the two fresh-machine commands,
the site in docs/ builds with `mkdocs build --strict` (no broken link or anchor), every command
the pages show uses options the scripts have, and the built pages render in a real browser with
their headings and their picture (headless Chromium; skipped only where it is not installed)."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PICTURE = DOCS / "assets" / "detections.jpg"
README_MAX_BYTES = 12 * 1024
PICTURE_MAX_BYTES = 150 * 1024

# The two fresh-machine commands, byte for byte: users paste them, and CI (.ci/run) runs the second.
TRAIN_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt"
    " && python train.py --phi 4 --demo"
)
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements-dev.txt"
    " && python -m pytest -q"
)

SCRIPTS = (
    "train", "predict", "get_map", "export", "convert_darknet", "check_data", "ablation", "summary",
    "kmeans_for_anchors", "voc_annotation",
)


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _nav_pages() -> list[str]:
    """The .md files mkdocs.yml's nav lists (read as text: the file needs no YAML loader here)."""
    return re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), flags=re.M)


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    run = _mkdocs_build(ROOT / "mkdocs.yml", site)
    assert run.returncode == 0, run.stdout + run.stderr
    return site


# README ------------------------------------------------------------------------------------------


def test_readme_is_short_and_keeps_the_two_commands():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; details belong in docs/"
    lines = README.read_text(encoding="utf-8").splitlines()
    assert TRAIN_COMMAND in lines and TEST_COMMAND in lines


def test_ci_runs_the_readme_test_command():
    """.ci/run installs and tests with README's command (in the venv it made itself)."""
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    quiet = [line.replace("pip install -q ", "pip install ", 1) for line in ci_lines]  # CI's log skips pip's
    assert TEST_COMMAND.split(" && ", 2)[2] in quiet


def test_readme_picture_is_a_small_jpeg():
    assert f"]({PICTURE.relative_to(ROOT).as_posix()})" in README.read_text(encoding="utf-8")
    assert PICTURE.stat().st_size <= PICTURE_MAX_BYTES
    with Image.open(PICTURE) as picture:
        assert picture.format == "JPEG" and min(picture.size) >= 256


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name == "id" and value)


@pytest.mark.slow
def test_readme_links_reach_existing_files_and_anchors(built_site):
    """Every relative link and picture in README names a file that exists; a link into a docs page
    with an anchor names a heading the built page has (mkdocs' strict build checks the pages'
    own links, not README's)."""
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        assert (ROOT / path).exists(), link
        if anchor:
            page = built_site / Path(path).relative_to("docs").with_suffix(".html")
            ids = _Ids()
            ids.feed(page.read_text(encoding="utf-8"))
            assert anchor in ids.ids, f"{link}: no such heading in {page.name}"


# The site ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_site_builds_strictly_with_every_page_in_the_nav(built_site):
    in_nav = _nav_pages()
    on_disk = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(in_nav) == on_disk, "every page in docs/ is in mkdocs.yml's nav, once"
    for page in in_nav:
        assert (built_site / page.replace(".md", ".html")).is_file(), page
    assert (built_site / "assets" / PICTURE.name).is_file()


@pytest.mark.slow
def test_strict_build_rejects_a_broken_anchor(tmp_path):
    """The strict build is what catches a broken link: mkdocs.yml must turn anchor checks on."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "data.md", "a", encoding="utf-8") as page:
        page.write("\nSee [training](training.md#no-such-heading).\n")
    run = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert run.returncode != 0
    assert "no-such-heading" in run.stdout + run.stderr


# Commands the pages show -------------------------------------------------------------------------


def _documented_commands() -> list[tuple[str, str, str]]:
    """(page, script, its arguments) for every `python SCRIPT.py ...` line in a bash block."""
    found = []
    for page in _pages():
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                match = re.search(r"\bpython (?:benchmarks/)?(\w+)\.py\b([^#]*)", line)
                if match and match.group(1) in SCRIPTS:
                    found.append((page.name, match.group(1), match.group(2)))
    return found


# Each script's --help in one process (TensorFlow, which some scripts import, loads once).
HELP = """import contextlib, io, json, sys
texts = {}
for name in sys.argv[1:]:
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            __import__(name).main(["--help"])
        except SystemExit:
            pass
    texts[name] = text.getvalue()
print(json.dumps(texts))
"""


def _helps(scripts: list[str]) -> dict[str, str]:
    run = subprocess.run(
        [sys.executable, "-c", HELP, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert run.returncode == 0, run.stderr
    helps = json.loads(run.stdout.strip().splitlines()[-1])
    assert all("--help" in text for text in helps.values()), helps
    return helps


@pytest.mark.slow
def test_documented_commands_use_options_the_scripts_have():
    commands = _documented_commands()
    assert {script for _, script, _ in commands} >= {
        "train", "predict", "get_map", "export", "convert_darknet", "check_data", "ablation", "summary",
    }
    helps = _helps(sorted({script for _, script, _ in commands} | {"train"}))
    helps["ablation"] += helps["train"]  # ablation.py hands every train.py option to its runs
    missing = [
        f"{page}: {script}.py {flag}"
        for page, script, arguments in commands
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", arguments)
        if not re.search(re.escape(flag) + r"(?![\w-])", helps[script])
    ]
    assert not missing, missing


# In a browser ------------------------------------------------------------------------------------


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _headless(browser: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# Opens a page in a frame and reports, once it has loaded, its first heading and every picture:
# src, whether it finished loading and its decoded size (0 x 0 when the file is missing or broken).
PROBE = """<!doctype html><html><body><iframe id="page" src="{page}" width="1280" height="1600"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument, out = document.createElement("pre"), h1 = doc.querySelector("h1");
  out.id = "probe";
  out.textContent = JSON.stringify({{
    h1: h1 ? h1.textContent.replace(/\\u00b6$/, "").trim() : null,
    images: Array.from(doc.images).map(function (i) {{
      return {{src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}};
    }})
  }});
  document.body.appendChild(out);
}});
</script></body></html>"""


def _probe(browser: str, site: Path, page: str, profile: Path) -> dict:
    probe = site / f"_probe_{page}"
    probe.write_text(PROBE.format(page=page), encoding="utf-8")
    run = _headless(
        browser, profile, "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
        probe.as_uri(),
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, flags=re.S)
    assert match, f"the probe did not report on {page}: {run.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def _first_heading(markdown: Path) -> str:
    title = markdown.read_text(encoding="utf-8").splitlines()[0].removeprefix("# ")
    return title.replace("`", "")


@pytest.mark.slow
def test_pages_render_in_chromium_with_their_headings_and_picture(built_site, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser check needs it")
    site = tmp_path / "site"
    shutil.copytree(built_site, site)

    home = _probe(browser, site, "index.html", tmp_path / "profile")
    assert home["h1"] == _first_heading(DOCS / "index.md")
    pictures = [image for image in home["images"] if image["src"].endswith(PICTURE.name)]
    assert len(pictures) == 1 and (site / pictures[0]["src"]).is_file()
    with Image.open(PICTURE) as picture:
        assert pictures[0]["complete"] and (pictures[0]["width"], pictures[0]["height"]) == picture.size

    other = _probe(browser, site, "training.html", tmp_path / "profile")
    assert other["h1"] == _first_heading(DOCS / "training.md") == "Training: train.py"

    # The screenshot: the picture's thousands of colours are on screen; a page without one (exit
    # codes: text and a table) has a few hundred, so the count tells a drawn picture from a blank box.
    colours = {}
    for page in ("index.html", "exit-codes.html"):
        shot = tmp_path / f"{page}.png"
        _headless(
            browser, tmp_path / "profile", "--window-size=1280,1600", "--virtual-time-budget=5000",
            f"--screenshot={shot}", (site / page).as_uri(),
        )
        assert shot.is_file(), f"no screenshot of {page}"
        with Image.open(shot) as image:
            pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        colours[page] = len(np.unique(pixels, axis=0))
    assert colours["index.html"] > 20_000 > 5 * colours["exit-codes.html"], colours
