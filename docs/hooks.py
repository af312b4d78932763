"""MkDocs hooks of sparta's documentation site (``hooks:`` in mkdocs.yml; not a page).

* The command-line reference (``reference/cli.md``) is generated at build time from the argparse parsers
  themselves: ``sparta`` (``sparta.cli.build_parser``) with every sub-command, ``sparta rl …``, ``sparta grid …``,
  and ``python -m sparta.parallel``. A page line ``<!-- cli-reference -->`` is replaced by each parser's ``--help``.
* Docstring coverage: every public class, function and method of the modules the API reference renders
  (``::: module`` lines in ``reference/*.md``) must have a docstring, or the build warns (and fails, strict).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.sparta")
ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cli-reference -->"


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:  # argparse keeps its sub-commands here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    out.append((name, sub))
    return out


def _walk(parser: argparse.ArgumentParser, depth: int) -> list[str]:
    lines = [f"{'#' * depth} `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for _, sub in _subparsers(parser):
        lines += _walk(sub, depth + 1)
    return lines


def cli_reference() -> str:
    """Markdown of every parser's help, the sub-commands nested under their command."""
    sys.path.insert(0, str(ROOT / "src"))
    os.environ["COLUMNS"] = "110"  # argparse wraps help at the terminal's width
    from sparta.cli import build_parser
    from sparta.parallel import __main__ as parallel_main

    lines = _walk(build_parser(), 2)
    make = getattr(parallel_main, "build_parser", None) or parallel_main.parser  # whichever name it has
    lines += _walk(make(), 2)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    return markdown


def _missing_docstrings(module_paths: list[str]) -> list[str]:
    import griffe

    loader = griffe.GriffeLoader(search_paths=[str(ROOT / "src")])
    loader.load("sparta")
    loader.resolve_aliases(implicit=False, external=False)
    missing: list[str] = []

    def check(obj, where: str) -> None:
        if obj.is_alias:
            try:
                obj = obj.final_target
            except griffe.AliasResolutionError:
                return
        if obj.kind.value not in ("class", "function") or obj.docstring:
            if obj.is_class:
                for name, member in obj.members.items():
                    if not name.startswith("_") and not member.is_alias and member.kind.value == "function" \
                            and not member.docstring:
                        missing.append(f"{member.path} ({member.relative_filepath}:{member.lineno})")
            return
        missing.append(f"{obj.path} ({obj.relative_filepath}:{obj.lineno})")

    for path in module_paths:
        module = loader.modules_collection[path]
        if not module.is_module:
            check(module, path)
            continue
        for member in module.members.values():
            if member.is_public and not member.is_module:
                check(member, path)
    return missing


def on_post_build(config) -> None:
    paths = []
    for page in sorted(Path(config["docs_dir"], "reference").glob("*.md")):
        paths += re.findall(r"^::: ([\w.]+)", page.read_text(), re.M)
    for item in _missing_docstrings(paths):
        log.warning(f"public name without a docstring (it is missing from the API reference): {item}")


try:  # a griffe extension (mkdocs.yml: the python handler's `extensions`), used when griffe is installed
    import griffe as _griffe

    _ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")

    def _role(match: re.Match) -> str:
        target = match.group(2).strip()
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    class SphinxRoles(_griffe.Extension):
        """Shows the Sphinx roles of sparta's docstrings (``:class:`~sparta.nn.SparseLinear```) as code spans
        (``SparseLinear``), as Sphinx would print their text, instead of as raw markup."""

        def on_instance(self, *, obj, **kwargs) -> None:
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = _ROLE.sub(_role, obj.docstring.value)
except ImportError:  # pragma: no cover
    pass
