"""README and docs/ keep pointing at things that exist.

Each checker reads one Markdown text and returns its problems (empty: none):

* :func:`link_problems`: relative links resolve to a file or folder, and a ``#anchor``
  matches a heading of the target (GitHub's slug rules, :func:`heading_slugs`);
* :func:`path_problems`: backticked repository paths that look like files
  (``sslib/...py``, ``tests/...``, ``notebooks/...``, ``benchmarks/...``, ``presets/...``)
  exist;
* :func:`module_problems`: ``python -m sslib.xxx`` (and ``torchrun ... -m sslib.xxx``)
  names a module that exists, found without importing it;
* :func:`stage_problems`: ``dvc repro <stage>`` names a stage of ``dvc.yaml`` or of
  ``pipeline/*/dvc.yaml`` (``<file>:<stage>`` a stage of that file).

Placeholders (``<stage>``, ``NN_``, ``*``, ``{a,b}``, ``...``) are not checked. Every
checker is shown failing on a small broken snippet below.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "reports" / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
REPO_PATH = re.compile(r"(?<![\w./-])((?:sslib|tests|notebooks|benchmarks|presets)/[\w./+-]*\.[A-Za-z]\w*)(?![\w/])")
MODULE = re.compile(r"(?:^|\s)-m[ \t]+(sslib(?:\.\w+)*)")
REPRO = re.compile(r"\bdvc[ \t]+repro((?:[ \t]+-{1,2}[A-Za-z][\w-]*)*)((?:[ \t]+[^\s`;&|)]+)*)")
PLACEHOLDER = re.compile(r"[<>*{}\[\]]|NN_|\.\.\.")


def _without_code(text: str) -> str:
    """The text with fenced blocks and inline code blanked (links there are not links)."""
    text = FENCE.sub("", text)
    return INLINE_CODE.sub("", text)


def _code(text: str) -> list[str]:
    """Fenced blocks without their shell comments, and inline code spans (newlines in a
    span read as spaces)."""
    blocks = [re.sub(r"(^|[ \t])#.*$", "", m.group(0), flags=re.M) for m in FENCE.finditer(text)]
    spans = [m.group(2).replace("\n", " ") for m in INLINE_CODE.finditer(FENCE.sub("", text))]
    return blocks + spans


def slugify(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_slugs(text: str) -> set[str]:
    """Every heading's anchor, duplicates numbered ``-1``, ``-2``, ... as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", text)):
        slug = slugify(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_problems(doc: Path, text: str) -> list[str]:
    """Relative links of ``text`` (a file at ``doc``) that lead nowhere."""
    problems = []
    for m in LINK.finditer(_without_code(text)):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if path and not dest.exists():
            problems.append(f"{target}: no such file ({dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
            continue
        if anchor and dest.suffix == ".md":
            dest_text = text if dest == doc else dest.read_text(encoding="utf-8")
            if anchor not in heading_slugs(dest_text):
                problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


def path_problems(text: str) -> list[str]:
    """Backticked repository file paths that do not exist."""
    problems = []
    for span in _code(text):
        for m in REPO_PATH.finditer(span):
            path = m.group(1)
            if PLACEHOLDER.search(path):
                continue
            if not (ROOT / path).exists():
                problems.append(f"{path}: no such file")
    return problems


def module_exists(name: str) -> bool:
    """Whether module ``name`` exists, found without running any package's ``__init__``."""
    top, *parts = name.split(".")
    spec = importlib.util.find_spec(top)
    for part in parts:
        if spec is None or spec.submodule_search_locations is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec is not None


def module_problems(text: str) -> list[str]:
    """``python -m sslib...`` modules that do not exist."""
    return [f"python -m {m.group(1)}: no such module"
            for span in _code(text) for m in MODULE.finditer(span)
            if not module_exists(m.group(1).rstrip("."))]


@lru_cache(maxsize=None)
def _stages(dvc_file: Path) -> frozenset[str]:
    data = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    return frozenset((data.get("stages") or {}).keys())


def _all_stages() -> frozenset[str]:
    files = [ROOT / "dvc.yaml", *sorted((ROOT / "pipeline").glob("*/dvc.yaml"))]
    return frozenset().union(*(_stages(f) for f in files if f.is_file()))


def stage_problems(text: str) -> list[str]:
    """``dvc repro`` targets that are no stage of the DVC files."""
    problems = []
    for span in _code(text):
        for m in REPRO.finditer(span):
            for target in m.group(2).split():
                if target.startswith("-") or PLACEHOLDER.search(target):
                    continue
                file, sep, name = target.rpartition(":")
                name = name.split("@")[0]
                if sep:
                    path = ROOT / file
                    if not path.is_file():
                        problems.append(f"dvc repro {target}: no DVC file {file}")
                    elif name not in _stages(path):
                        problems.append(f"dvc repro {target}: {file} has no stage {name}")
                elif name not in _all_stages():
                    problems.append(f"dvc repro {target}: no stage {name}")
    return problems


def all_problems(doc: Path, text: str) -> list[str]:
    return link_problems(doc, text) + path_problems(text) + module_problems(text) + stage_problems(text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_resolves(doc):
    assert all_problems(doc, doc.read_text(encoding="utf-8")) == []


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / m.group(1).partition("#")[0]).resolve() for m in LINK.finditer(_without_code(readme))}
    assert [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked] == []


VIRTUAL = ROOT / "docs" / "snippet.md"  # where the snippets below pretend to live


@pytest.mark.parametrize("check, snippet", [
    (lambda t: link_problems(VIRTUAL, t), "See [the pipeline](pipelines.md)."),
    (lambda t: link_problems(VIRTUAL, t), "See [stages](pipeline.md#no-such-section)."),
    (lambda t: link_problems(VIRTUAL, t), "# Title\n\nSee [below](#title-2)."),
    (lambda t: link_problems(VIRTUAL, t), "See [reports](../report/README.md)."),
    (path_problems, "The stage is `sslib/stages/train_cams.py`."),
    (path_problems, "Run `python benchmarks/bench_nothing.py --quick`."),
    (path_problems, "```bash\npython -m pytest tests/test_no_such_file.py\n```"),
    (path_problems, "Apply `presets/pascal.yaml`."),
    (module_problems, "Run `python -m sslib.stages.train_cams --variant ssc`."),
    (module_problems, "```bash\ntorchrun --nproc-per-node 2 -m sslib.no_such_module\n```"),
    (stage_problems, "Run `dvc repro train_cams`."),
    (stage_problems, "Run `dvc repro -s -f pipeline/eval_cam/dvc.yaml:train_cam@cam-1`."),
    (stage_problems, "Run `dvc repro pipeline/nothing/dvc.yaml:nothing@ssc-0`."),
], ids=["file", "anchor-elsewhere", "anchor-here", "folder", "sslib-path", "benchmark-path", "test-in-block",
        "preset", "module", "module-torchrun", "stage", "stage-in-wrong-file", "dvc-file"])
def test_each_checker_finds_its_broken_reference(check, snippet):
    assert len(check(snippet)) == 1


@pytest.mark.parametrize("check, snippet", [
    (lambda t: link_problems(VIRTUAL, t), "# A `code` title: yes!\n\nSee [it](#a-code-title-yes), "
                                          "[the stages](pipeline.md#the-stages), [web](https://example.org/x)."),
    (lambda t: link_problems(VIRTUAL, t), "# Same\n\n# Same\n\nSee [the second](#same-1)."),
    (path_problems, "`sslib/stages/train_cam.py`, `notebooks/NN_<stage>.py`, `tests/test_docs.py`."),
    (module_problems, "`python -m sslib.stages.train_cam`, `python -m sslib.stages.<stage>`."),
    (stage_problems, "`dvc repro resolve && dvc status`, `dvc repro pipeline/train_cam/dvc.yaml:train_cam@ssc-0`."),
], ids=["links", "duplicate-heading", "paths", "modules", "stages"])
def test_each_checker_passes_what_resolves(check, snippet):
    assert check(snippet) == []


def test_slugs_follow_github():
    assert slugify("The training steps at the paper's sizes") == "the-training-steps-at-the-papers-sizes"
    assert slugify("1. CAM network (`train_cam`)") == "1-cam-network-train_cam"
    assert slugify("Where [results](x.md) land") == "where-results-land"


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)]


def test_readme_commands_are_what_ci_runs():
    """README's two commands: the first is .ci/run's install (there with -q) then `dvc repro`,
    the second is .ci/run's test command, character for character."""
    first, second = _bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[:2]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci == [first.removesuffix(" && dvc repro").replace("pip install -e", "pip install -q -e"), second]
