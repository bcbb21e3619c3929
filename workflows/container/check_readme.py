#!/usr/bin/env python3
"""Check that a README's commands and links match the installed bids_harmonize.

Run where bids_harmonize is installed (inside the image in CI: the image's own
entry points are what the README promises). Checked:

- every command line in a code block (fenced or indented) that starts with one
  of the project's programs (``bids_harmonize``, ``bids_harmonize-synth``,
  ``bids_harmonize-templates``, ``python -m bids_harmonize...``), after any
  ``VAR=value`` prefixes and split at ``&&``: the program exists, and every
  ``-x``/``--xyz`` flag on the line is in that program's ``--help``;
- every flag in the first cell of the options table is in ``bids_harmonize --help``;
- every relative Markdown link target exists next to the README.

Prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

PROGRAMS = ("bids_harmonize", "bids_harmonize-synth", "bids_harmonize-templates")
FLAG = re.compile(r"(?<![\w/.=-])(--?[A-Za-z][\w-]*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of fenced code blocks and 4-space-indented lines."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or (line.startswith("    ") and line.strip()):
            out.append((number, line.strip()))
    return out


def program_of(words: list[str]) -> tuple[list[str], list[str]] | None:
    """Split a command's words into (program argv, arguments) for the project's programs."""
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return None
    if words[0] in PROGRAMS:
        return [words[0]], words[1:]
    if len(words) >= 3 and words[0] in ("python", "python3") and words[1] == "-m" \
            and words[2].split(".")[0] == "bids_harmonize":
        return [sys.executable, "-m", words[2]], words[3:]
    return None


class HelpCache:
    def __init__(self) -> None:
        self._texts: dict[tuple[str, ...], str | None] = {}

    def get(self, argv: list[str]) -> str | None:
        key = tuple(argv)
        if key not in self._texts:
            if argv[0] != sys.executable and shutil.which(argv[0]) is None:
                self._texts[key] = None
            else:
                proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=300)
                self._texts[key] = proc.stdout if proc.returncode == 0 else None
        return self._texts[key]


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def check(readme: Path) -> tuple[list[str], int]:
    """Problems found, and how many commands, options and links were checked."""
    text = readme.read_text(encoding="utf-8")
    helps = HelpCache()
    problems: list[str] = []
    checked = 0

    for number, line in code_lines(text):
        for segment in line.split("&&"):
            try:
                words = shlex.split(segment.replace("[", " ").replace("]", " "))
            except ValueError:
                words = segment.split()
            found = program_of(words)
            if found is None:
                continue
            argv, args = found
            checked += 1
            help_text = helps.get(argv)
            name = " ".join(argv[1:] if argv[0] == sys.executable else argv)
            if help_text is None:
                problems.append(f"{readme.name}:{number}: '{name}' is not installed or its --help fails")
                continue
            for flag in FLAG.findall(" ".join(args)):
                if not has_flag(help_text, flag):
                    problems.append(f"{readme.name}:{number}: '{name}' has no option {flag}")

    main_help = helps.get(["bids_harmonize"])
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("| `-"):
            continue
        first_cell = line.split("|")[1]
        for flag in FLAG.findall(first_cell):
            checked += 1
            if main_help is None or not has_flag(main_help, flag):
                problems.append(f"{readme.name}:{number}: options table lists {flag}, "
                                "which 'bids_harmonize --help' does not have")

    for number, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            checked += 1
            if not (readme.parent / target.split("#")[0]).exists():
                problems.append(f"{readme.name}:{number}: link target {target} does not exist")

    if checked == 0:
        problems.append(f"{readme.name}: no command, option or link found to check")
    return problems, checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path, nargs="?", default=Path("README.md"))
    args = parser.parse_args(argv)
    problems, checked = check(args.readme)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.readme}: {checked} commands, options and links match the installed bids_harmonize")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
