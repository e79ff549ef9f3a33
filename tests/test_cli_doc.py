"""The committed man page and bash completion equal what the parsers generate now."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from popproxy.cli_doc import bash_completion, full_parser, main, manual_page

PACKAGING = Path(__file__).resolve().parent.parent / "packaging"
REGENERATE = ("python3 -m popproxy.cli_doc man > packaging/popproxy.1; "
              "python3 -m popproxy.cli_doc bash > packaging/popproxy.bash-completion")


def test_committed_man_page_is_current() -> None:
    assert (PACKAGING / "popproxy.1").read_text() == manual_page(), f"run: {REGENERATE}"


def test_committed_completion_is_current() -> None:
    assert (PACKAGING / "popproxy.bash-completion").read_text() == bash_completion(), (
        f"run: {REGENERATE}")


def test_delegated_subcommands_are_documented_with_their_own_options() -> None:
    page = manual_page()
    assert "popproxy quarantine release" in page
    assert "\\-\\-explain" in page or "--explain" in page  # from popproxy scan's own parser
    help_text = full_parser().format_help()
    for command in ("run", "check-config", "scan", "quarantine", "warm"):
        assert command in help_text


def _complete(words: list[str]) -> list[str]:
    script = (f"source {PACKAGING / 'popproxy.bash-completion'}; COMP_WORDS=({' '.join(words)}); "
              "COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE=\"${COMP_WORDS[*]}\"; "
              "COMP_POINT=${#COMP_LINE}; _shtab_popproxy; printf '%s\\n' \"${COMPREPLY[@]}\"")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_bash_completes_subcommands_and_options() -> None:
    assert _complete(["popproxy", "qu"]) == ["quarantine"]
    assert "--event-loop" in _complete(["popproxy", "run", "--ev"])


@pytest.mark.parametrize("argv, code", [(["man"], 0), (["bash"], 0), (["pdf"], 2)])
def test_main(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    out = capsys.readouterr().out
    assert bool(out) == (code == 0)
