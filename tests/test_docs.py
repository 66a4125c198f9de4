"""The docs stay true to the repository: generated result tables, links, the README's size and commands."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 220


def _renderer():
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "docs" / "render_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


render_results = _renderer()


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _without_code(text: str) -> str:
    """Markdown with fenced code blocks and inline code spans removed (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _relative_links(text: str) -> list[str]:
    out = []
    for target in LINK.findall(_without_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (http:, mailto:, ...) or an anchor in the same page
        out.append(target)
    return out


# --- generated result blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", render_results.PAGES)
def test_result_blocks_are_what_the_renderer_writes_now(page: str) -> None:
    path = ROOT / page
    text = path.read_text(encoding="utf-8")
    assert render_results.block_names(text), f"{page} has no generated results block"
    expected = render_results.render_text(text, ROOT, page)
    assert text == expected, (
        f"{page}: a generated results block differs from metrics/ and reports/; run "
        "`python docs/render_results.py` (dvc repro's report stage does) and commit the page"
    )


def test_every_block_name_is_known_and_closed() -> None:
    for page in render_results.PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        assert text.count("<!-- results:begin ") == text.count(render_results.END), page
        for name in render_results.block_names(text):
            assert name in render_results.BLOCKS, (page, name)


def test_renderer_rewrites_a_stale_block_and_leaves_the_rest(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    (tmp_path / "docs").mkdir()
    doc = {"steps": 6, "seed": 0, "reference": "baseline", "pairs": {"relation_swap": 10, "object_swap": 0},
           "baseline": {"relation_swap": 0.5, "macro": 0.5}, "ceclip": {"relation_swap": 1.0, "macro": 1.0},
           "gain": {"relation_swap": 0.5, "macro": 0.5}, "train_seconds": {"baseline": 1.0, "ceclip": 2.0}}
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(doc), encoding="utf-8")
    page = "intro\n<!-- results:begin summary -->\nold figures 99.9\n<!-- results:end -->\noutro\n"
    (tmp_path / "README.md").write_text(page, encoding="utf-8")
    assert render_results.render(tmp_path, check=True) == ["README.md"]
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == page  # --check writes nothing
    assert render_results.render(tmp_path) == ["README.md"]
    new = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert new.startswith("intro\n<!-- results:begin summary -->\n") and new.endswith("<!-- results:end -->\noutro\n")
    assert "old figures" not in new and "| `relation_swap` | 10 | 50.0 | 100.0 | +50.0 |" in new
    assert render_results.render(tmp_path) == []  # idempotent
    # world.md is missing here: skipped, not an error; an unknown block name is an error
    (tmp_path / "docs" / "world.md").write_text("<!-- results:begin nope -->\n<!-- results:end -->\n")
    with pytest.raises(render_results.RenderError, match="nope"):
        render_results.render(tmp_path)


def test_missing_sources_say_how_to_get_them(tmp_path: Path) -> None:
    text = "<!-- results:begin world-results -->\n<!-- results:end -->\n"
    out = render_results.render_text(text, tmp_path)
    assert "make repro" in out and "metrics/compare.json" in out


def test_report_stage_runs_the_renderer_last() -> None:
    yaml = pytest.importorskip("yaml")
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["report"]
    assert stage["cmd"][-1] == "python docs/render_results.py"
    assert "docs/render_results.py" in stage["deps"]


# --- the README and the links -----------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_commands_are_makefile_targets() -> None:
    text = README.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, flags=re.M))
    used = set(re.findall(r"\bmake ([a-z][\w-]*)", text))
    assert {"repro", "test"} <= used, "the README must give the two commands, `make repro` and `make test`"
    assert used <= targets, f"the README uses make targets the Makefile lacks: {sorted(used - targets)}"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (lower case, punctuation dropped, spaces -> '-')."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    out = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        out.add(re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in _relative_links(text) + re.findall(r"\]\((#[^)\s]+)\)", _without_code(text)):
        path, _, anchor = target.partition("#")
        dest = page.parent / path if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files or headings: {broken}"


def test_anchors_follow_github() -> None:
    assert _anchors("# A\n## Accuracy versus step: `hardneg train-curves`\n```\n# not a heading\n```\n") == {
        "a", "accuracy-versus-step-hardneg-train-curves"}


def test_link_scanner() -> None:
    text = ("[a](docs/x.md) ![b](img.png) [c](https://e.org) [d](#top) [e](y.md#sec)\n"
            "`[f](not-a-link.md)`\n```\n[g](code.md)\n```\n")
    assert _relative_links(text) == ["docs/x.md", "img.png", "y.md#sec"]
