"""The README's and the documentation pages' code blocks, commands and figures, run and checked as a reader would run
them (training shortened), so they stay true.

Every page (README.md and docs/**/*.md) is read. Every fenced block tagged ``bash``, ``python`` or ``toml`` is
handled: a ``sparta`` command runs in-process in a fresh directory, with the shortenings below; a Python block runs
as a script; a TOML block is written to a file and trained with ``sparta train --config``. A command the table below
does not know fails the test: add it (and its shortening or its reason to be skipped) when you add it to a page.
Every figure must exist, with the command that drew it and a date in its section; every relative link must lead to
a file that exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from sparta.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").rglob("*.md"))

# (pattern, replacement) applied to a command's text, in order: fewer epochs, narrower default layers, fewer
# steps and episodes
SHORTEN = [
    (r"^(sparta train(?! --resume)(?!.*--epochs)(?!.*--config).*)$", r"\1 --epochs 2"),
    (r"^(sparta train(?! --resume)(?!.*--hidden)(?!.*--preset)(?!.*--config).*)$", r"\1 --hidden 100 100 100"),
    (r"--epochs (\d+)", lambda m: f"--epochs {2 if int(m.group(1)) <= 20 else 3}"),
    (r"^(sparta rl train (?!--resume)(?!.*--steps).*)$", r"\1 --steps 0"),  # the agent's default budget: shortened too
    (r"^(sparta rl train (?!--resume).*)--steps \d+", r"\1--steps 1500 --set learning_starts=500 --eval-every 750 "
                                                    r"--eval-episodes 1 --every 20 --checkpoint-every 500"),
    (r"^(sparta rl train --resume .*)--steps \d+", r"\1--steps 2000"),
    (r"^(sparta rl eval .*)$", r"\1 --episodes 1"),
    (r"--preset scale-10m", "--preset scale-10m --hidden 400 400 400 400 --data-option n_train=512 "
                            "--data-option n_test=128"),
]
# commands not run here, and why
SKIP = {
    "pip install": "installs: the suite runs in the installed environment",
    "mkdocs build": "CI's docs step builds the site (.ci/run)",
    "python -m pytest": "this test suite itself",
    "torchrun": "needs several hosts",
    "python benchmarks/": "benchmarks run for minutes to hours; their tables in the README come from them",
    "sparta grid": "tests/grid/test_grid.py runs the grid commands on short episodes (CityLearn needs minutes here)",
    "sparta train --workers 2 --preset set-mlp-madelon": "tests/test_cli.py::test_train_with_workers_is_a_run_like_"
                                                         "any_other runs it (three processes cost seconds to start)",
}
# an environment's module: without it, the command is skipped
NEEDS = {"LunarLander": "Box2D", "Hopper": "mujoco", "HalfCheetah": "mujoco", "Walker2d": "mujoco", "MinAtar": "minatar"}


def blocks(text: str) -> list[tuple[str, str, int]]:
    """``(language, body, line)`` of every fenced block."""
    out, lang, body, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if lang is None:
                lang, body, start = line[3:].strip(), [], number
            else:
                out.append((lang, "\n".join(body), start))
                lang = None
        elif lang is not None:
            body.append(line)
    return out


def commands(body: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``a && b`` split."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out += [part.strip() for part in line.split("&&")]
    return out


def shorten(command: str) -> str:
    for pattern, replacement in SHORTEN:
        command = re.sub(pattern, replacement, command)
    return command


def run(command: str, capsys) -> str:
    code = main(shlex.split(command)[1:])
    captured = capsys.readouterr()
    assert code == 0, f"{command}\n{captured.err}"
    return captured.out


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_blocks_and_commands(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = page.read_text()
    ran, skipped, not_made = [], [], set()  # not_made: run directories of skipped commands
    for lang, body, line in blocks(text):
        where = f"{page_id(page)}:{line}"
        if lang == "bash":
            for command in commands(body):
                reason = next((why for prefix, why in SKIP.items() if command.startswith(prefix)), None)
                missing = [m for env, m in NEEDS.items() if env in command and importlib.util.find_spec(m) is None]
                if "--data /" in command:
                    reason = "needs a data set's files"
                if any(run_dir in command.split() for run_dir in not_made):
                    reason = "its run was not trained here"
                if reason or missing:
                    skipped.append((command, reason or f"needs {missing[0]}"))
                    not_made.update(re.findall(r"--out (\S+)", command))
                    continue
                assert command.startswith("sparta "), f"{where}: unknown command {command!r}; teach tests/test_readme.py"
                run(shorten(command), capsys)
                ran.append(command)
        elif lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(body, where, "exec"), {"__name__": "__readme__"})
            for expr, expected in re.findall(r"^print\((\w+)\)\s+#\s*(.+)$", body, re.M):
                assert expected.strip() in out.getvalue(), f"{where}: print({expr}) shows {out.getvalue()!r}"
            after = text.split(body, 1)[1].split("```", 2)[1]  # the prose after the block
            for expected in re.findall(r"It prints `([^`]+)`", after):
                assert expected in out.getvalue(), f"{where}: the page says it prints {expected!r}, it printed " \
                                                   f"{out.getvalue()!r}"
            ran.append(where)
        elif lang == "toml":
            (tmp_path / "run.toml").write_text(body)
            run("sparta train --config run.toml --out runs/toml -q", capsys)
            summaries = [json.loads((tmp_path / "runs/toml" / d / "summary.json").read_text()) for d in (".", "dense")]
            assert all(s["test_acc"] > 0.8 for s in summaries), summaries  # it learns visibly (chance: 0.5)
            claim = re.search(r"test accuracy (\d\.\d+) sparse\s+with ([\d ]+) connections, (\d\.\d+) dense", text)
            assert claim, f"{where}: the page no longer quotes the TOML example's results; update this test"
            sparse_acc, connections, dense_acc = float(claim[1]), int(claim[2].replace(" ", "")), float(claim[3])
            # as quoted, to a few test samples (another thread count may change a borderline prediction)
            got = (summaries[0]["test_acc"], summaries[1]["test_acc"])
            assert got == pytest.approx((sparse_acc, dense_acc), abs=0.005), (got, claim[0])
            assert summaries[0]["connections"] == connections, summaries[0]
            ran.append(where)
        else:
            assert lang in ("", "text"), f"{where}: a ```{lang} block; teach tests/test_readme.py to run it"
    if page == README:
        assert len(ran) >= 8, ran
    assert {c for c, _ in skipped} <= {c for lang, body, _ in blocks(text) if lang == "bash" for c in commands(body)}


def sections(text: str) -> list[str]:
    """The text between headings (a heading starts its section); fenced blocks are not split."""
    out, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("#") and not fenced and current:
            out.append("\n".join(current))
            current = []
        current.append(line)
    out.append("\n".join(current))
    return out


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_figures_exist_with_their_command_and_date(page):
    """No figure without the command that drew it and the date, in its section; the file exists."""
    for section in sections(page.read_text()):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", section):
            assert (page.parent / target).is_file(), f"{page_id(page)}: figure {target} does not exist"
            assert re.search(r"`(python |sparta )[^`]+`", section), f"{page_id(page)}: figure {target} has no command"
            assert re.search(r"\b20\d\d-\d\d-\d\d\b", section), f"{page_id(page)}: figure {target} has no date"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_lead_to_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#", 1)[0]
        if re.match(r"^[a-z]+:", target) or not path:
            continue
        assert (page.parent / path).exists(), f"{page_id(page)}: link to {target}, which does not exist"


def test_the_readme_says_what_the_quick_start_prints(tmp_path, monkeypatch, capsys):
    """The shown header and summary are those of `sparta train`: its header lines, the dense-layer note."""
    monkeypatch.chdir(tmp_path)
    shown = README.read_text().split("Its header and final summary", 1)[1].split("```text\n", 1)[1].split("```")[0]
    out = run("sparta train --epochs 3 --hidden 1000 1000 1000 -q", capsys)  # 3: no short-run speed note
    for line in out.splitlines():
        if line.startswith(("data:", "model:", "note:")):
            assert line in shown, line


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_unfilled_placeholders(page):
    text = page.read_text()
    assert "{{" not in text and "}}" not in text, f"{page_id(page)} holds a {{{{…}}}} placeholder"
    assert "@@" not in text, f"{page_id(page)} holds an @@…@@ placeholder"
    assert not re.findall(r"^[A-Z][A-Z0-9]*_[A-Z0-9_]+$", text, re.M), f"{page_id(page)} holds a TABLE_NAME placeholder"


def test_the_readme_and_the_help_quote_the_same_time_for_sparta_train(capsys):
    assert main(["train", "--help"]) == 0
    helped = re.search(r"about (\d+) s on 2 cores", " ".join(capsys.readouterr().out.split()))
    quoted = re.search(r"the same network dense \(~(\d+) s\)", README.read_text())
    assert helped and quoted and helped.group(1) == quoted.group(1), (helped, quoted)


def test_the_layout_names_the_packages_and_files_there_are():
    """The code layout page lists every sub-package of src/sparta, and each file it names exists there."""
    src = README.parent / "src" / "sparta"
    layout = (README.parent / "docs" / "layout.md").read_text().split("\nsrc/sparta/\n", 1)[1].split("\nbenchmarks/", 1)[0]
    listed = dict(re.findall(r"^  (\w+)/\s+(.*(?:\n {13}.*)*)", layout, re.M))
    packages = {d.name for d in src.iterdir() if (d / "__init__.py").is_file()}
    assert set(listed) == packages, (sorted(listed), sorted(packages))
    for package, text in listed.items():
        for name in re.findall(r"\b(\w+\.py)\b", text):
            assert (src / package / name).is_file(), f"docs/layout.md names {package}/{name}, which does not exist"


def test_ci_runs_the_readmes_install_test_and_docs_commands():
    """`.ci/run` runs the README's test command and its docs build command, character for character."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    shown = [c for lang, body, _ in blocks(README.read_text()) if lang == "bash" for c in body.splitlines()]
    test = next(line for line in shown if line.endswith("python -m pytest -q"))
    docs = next(re.sub(r"\s+#.*$", "", line) for line in shown if "mkdocs build" in line)
    assert test in ci and docs in ci, (test, docs)
