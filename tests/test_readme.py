"""The README's set-up commands and CI stay in step."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_commands():
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)?\n(.*?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    cmds = setup_commands()
    assert len(cmds) == 2, cmds
    assert "featurize demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    m = re.search(r"^TEST_COMMAND='(.*)'$", ci, flags=re.M)
    assert m, "no TEST_COMMAND in .ci/run"
    assert m.group(1) == setup_commands()[1].strip()
