"""Every Markdown file the code, docs, notebooks and recipes cite is in the repository (no citation of a
file only the developers have, such as a design note outside the clone)."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[A-Z][\w-]*\.md)\b")
SOURCES = ("featheads", "featurize", "heads", "blend", "store", "docs", "notebooks", "bench", "tests")


def cited_files():
    files = [REPO / "README.md"]
    for top in SOURCES:
        files += [p for p in (REPO / top).rglob("*") if p.suffix in (".py", ".md", ".ipynb", ".json")
                  and p != Path(__file__).resolve()]
    for path in files:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in CITED.findall(line):
                yield path, n, name


def resolves(name: str, cited_in: Path) -> bool:
    return any((base / name).is_file() for base in (REPO, REPO / "docs", REPO / "bench", cited_in.parent))


def test_every_cited_markdown_file_exists_in_the_repository():
    missing = [f"{p.relative_to(REPO)}:{n}: {name}" for p, n, name in cited_files()
               if not resolves(name, p)]
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def test_the_check_sees_a_citation_of_a_missing_file(tmp_path):
    assert CITED.findall("see DESIGN.md and docs/STORE.md") == ["DESIGN.md", "docs/STORE.md"]
    assert not resolves("DESIGN.md", REPO / "store" / "schema.py")
