"""One vocabulary across every command (docs/CLI.md), checked by walking every command's parameters,
and every option the README and docs/ use exists on the command they use it with."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
GROUPS = {"featurize": "featurize.cli", "heads": "heads.cli", "blend": "blend.cli", "store": "store.cli"}
# Old spellings, accepted (hidden) so that scripts keep working, never shown in --help. `--backbone` names
# an architecture where featurize runs one; on heads it named a feature source, now --source-name.
RETIRED = {"--quiet", "--half", "--name", "--predictions"}
RETIRED_IN = {"heads": {"--backbone"}}
# Commands that replace something they wrote before: a prediction run, a file or a folder.
REPLACING = {"heads fit mtl", "heads fit expr", "heads fit lsd", "heads predict", "blend apply", "blend submit",
             "blend report", "store export"}
# Commands whose work takes long enough for a progress bar.
LONG = {"featurize run", "featurize openface", "featurize sr", "featurize faces", "featurize demo",
        "featurize finetune", "heads fit mtl", "heads fit expr", "heads fit lsd", "heads predict", "heads tune",
        "blend tune"}


def walk(cmd, path):
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from walk(cmd.get_command(ctx, name), path + [name])
    else:
        yield " ".join(path), cmd


COMMANDS = dict(kv for g, mod in GROUPS.items() for kv in walk(importlib.import_module(mod).main, [g]))


def options(cmd) -> dict[str, click.Option]:
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def visible(cmd) -> set[str]:
    """Option names --help shows: not hidden, not an AliasedOption's old names."""
    return {o for p in cmd.params if isinstance(p, click.Option) and not p.hidden
            for o in p.opts + p.secondary_opts if o not in getattr(p, "aliases", ())}


def test_old_spellings_still_work_and_help_does_not_show_them():
    from click.testing import CliRunner

    fit = COMMANDS["heads fit mtl"]
    names = {o for p in fit.params for o in p.opts}
    assert {"--name", "--quiet", "--backbone"} <= names  # still accepted
    text = CliRunner().invoke(fit, ["--help"]).output
    assert "--run " in text and "--name" not in text and "--quiet" not in text and "--backbone" not in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_speaks_the_vocabulary(name):
    cmd = COMMANDS[name]
    shown = visible(cmd)
    retired = RETIRED | RETIRED_IN.get(name.split()[0], set())
    assert not shown & retired, f"{name}: shows retired option(s) {sorted(shown & retired)} (docs/CLI.md)"
    takes_store = any(p.name in ("store", "store_path") or (isinstance(p, click.Argument) and p.name == "path"
                                                           and name.startswith("store "))
                      for p in cmd.params)
    if takes_store:
        assert "--store" in shown, f"{name}: a store is named with --store"
    if name in REPLACING:
        assert "--overwrite" in shown, f"{name}: replaces earlier output, so it asks for --overwrite"
    if name in LONG:
        assert "--no-progress" in shown, f"{name}: long work has a progress bar, switched off by --no-progress"
    if "--precision" in options(cmd):
        choices = set(options(cmd)["--precision"].type.choices)
        assert choices <= {"fp32", "bf16", "fp16"}, f"{name}: --precision {choices}"
    assert re.search(rf"^\s*{re.escape(name)}\b", cmd.help or "", re.M), f"{name}: its --help has no example"


def test_every_command_the_vocabulary_lists_exists():
    assert REPLACING <= set(COMMANDS) and {c for c in LONG if c in COMMANDS} >= LONG - {"featurize finetune",
                                                                                        "featurize faces"}


def documented_commands():
    """(file:line, command path, options) of every command line in README.md and docs/*.md."""
    pages = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
    out = []
    for page in pages:
        text = page.read_text()
        for block in re.finditer(r"^```(?:bash|sh)?\n(.*?)^```", text, re.M | re.S):
            start = text[:block.start()].count("\n") + 2
            lines = block.group(1).replace("\\\n", " ").splitlines()
            for i, line in enumerate(lines):
                line = line.split(" #")[0].strip()
                for part in re.split(r"&&|\|", line):
                    words = part.split()
                    while words and "=" in words[0]:  # VAR=value command ...
                        words = words[1:]
                    if words and Path(words[0]).name in GROUPS:
                        group = Path(words[0]).name
                        path = [group]
                        cmd = importlib.import_module(GROUPS[group]).main
                        rest = words[1:]
                        while isinstance(cmd, click.Group) and rest and rest[0] in cmd.list_commands(
                                click.Context(cmd)):
                            cmd = cmd.get_command(click.Context(cmd), rest[0])
                            path.append(rest.pop(0))
                        if isinstance(cmd, click.Group):
                            continue  # a synopsis such as `blend tune / apply`
                        opts = [w.split("=")[0] for w in rest if w.startswith("--")]
                        out.append((f"{page.relative_to(REPO)}:{start + i}", " ".join(path), opts))
    return out


def test_every_option_in_the_readme_and_docs_exists_on_its_command():
    wrong = []
    for where, name, opts in documented_commands():
        known = set(options(COMMANDS[name])) | {"--help"}
        wrong += [f"{where}: {name} {o}" for o in opts if o not in known and not o.startswith("--...")]
    assert not wrong, "options the docs use that the command does not have:\n" + "\n".join(wrong)


def test_the_walker_sees_a_wrong_option_in_a_doc_line(tmp_path, monkeypatch):
    assert shlex.split("blend tune --store s.h5")  # the line format the reader expects
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text("```bash\nblend tune --store s.h5 --not-an-option 3\n```\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    found = documented_commands()
    assert found == [("README.md:2", "blend tune", ["--store", "--not-an-option"])]
