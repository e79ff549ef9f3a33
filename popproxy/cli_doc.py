"""The manual page and shell completion, generated from the command line's own parsers.

``python3 -m popproxy.cli_doc man > packaging/popproxy.1`` and
``python3 -m popproxy.cli_doc bash > packaging/popproxy.bash-completion`` write the committed
files; tests/test_cli_doc.py regenerates both and fails when they differ, so neither can drift
from ``--help``.  argparse-manpage and shtab (the test extra) do the formatting: both read an
``argparse`` parser, so the sub-commands that parse their own arguments (``scan``,
``quarantine``, ``warm``, ``cert``, ``explain``, ``test-login``) are attached here with
their real parsers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from popproxy import __version__

# Sub-commands whose argument list is parsed by their own module's parser (cli.main delegates
# to them before the top-level parser runs): name -> (help, that parser's builder).
DELEGATED: dict[str, tuple[str, Callable[[], argparse.ArgumentParser]]] = {}


SUMMARY = "POP3 security proxy: TLS, zero-trust policy, lockouts and message scanning"
DESCRIPTION = """\
popproxy sits between POP3 clients and legacy POP3 servers. It terminates TLS (implicit TLS
and STLS, RFC 2595), applies the policy in YAML files (address allowlists, TLS minimums,
routing of users to upstreams, PROXY protocol from trusted balancers), locks out password
guessing per account, source and pair, and scans every message a client retrieves (links,
attachments, lures), tagging, defanging or quarantining it while keeping sizes and UIDLs
consistent (RFC 1939). Signals to "popproxy run": SIGHUP reloads the policy and certificates,
SIGTERM drains sessions and stops. The documentation is in docs/ of the source tree."""


def _delegated() -> dict[str, tuple[str, Callable[[], argparse.ArgumentParser]]]:
    from popproxy.cert_cli import build_parser as cert_parser
    from popproxy.explain_cli import build_explain_parser, build_test_login_parser
    from popproxy.quarantine_cli import build_parser as quarantine_parser
    from popproxy.scan.cli_scan import build_parser as scan_parser
    from popproxy.warm_cli import build_parser as warm_parser

    return {
        "scan": ("scan .eml files, directories, mbox or Maildir", scan_parser),
        "quarantine": ("list, show, release or purge held messages", quarantine_parser),
        "warm": ("judge mailboxes before their owners' first login", warm_parser),
        "cert": ("certificates, expiry and fingerprints to pin in clients", cert_parser),
        "explain": ("which listener and user rules, route, upstream and lockout state apply "
                    "to a user from an address", build_explain_parser),
        "test-login": ("log in to a user's upstream through the policy's route",
                       build_test_login_parser),
        **DELEGATED,
    }


def full_parser() -> argparse.ArgumentParser:
    """``popproxy``'s parser with every sub-command's real arguments (for documentation)."""
    from popproxy.cli import build_parser

    parser = build_parser()
    parser.description = DESCRIPTION
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, (help_text, build) in _delegated().items():
        real = build()
        sub._name_parser_map.pop(name, None)
        sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest != name]
        sub.add_parser(name, help=help_text, parents=[real], add_help=False,
                       description=real.description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def manual_page() -> str:
    from build_manpages.manpage import Manpage

    page = Manpage(full_parser(), format="single-commands-section")
    page.description = SUMMARY
    page.source = f"popproxy {__version__}"
    page.manual = "popproxy manual"
    page.date = ""  # reproducible: the version says which release it documents
    return str(page)


def bash_completion() -> str:
    import shtab

    return str(shtab.complete(full_parser(), shell="bash"))


def main(argv: list[str] | None = None) -> int:
    what = (sys.argv[1:] if argv is None else argv)[:1]
    if what == ["man"]:
        sys.stdout.write(manual_page())
    elif what == ["bash"]:
        sys.stdout.write(bash_completion())
    else:
        print("usage: python3 -m popproxy.cli_doc man|bash", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
