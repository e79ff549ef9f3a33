"""The key reference in docs/policy.md is generated from the schema and cannot drift; the
effective-policy dump (issue 19 item 4)."""

from __future__ import annotations

from pathlib import Path

import yaml

from popproxy.policy import Policy
from popproxy.policy.reference import BEGIN, END, dump, markdown, splice

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def test_docs_policy_md_holds_exactly_the_generated_reference() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert markdown().rstrip("\n") in text, (
        "docs/policy.md's key reference differs from the schema: run "
        "`python3 -m popproxy schema --markdown --update docs/policy.md`")
    assert splice(text, markdown()) == text


def test_every_key_of_the_schema_has_a_row() -> None:
    rows = markdown()
    for key in ("`listeners.N.port`", "`upstreams.NAME.warm_login.separator`",
                "`scan.thresholds.quarantine`", "`lockout.pair.block_after`", "`state_dir`"):
        assert f"| {key} |" in rows
    assert "| `listeners.N.port` | integer (ge 1, le 65535) | required |" in rows
    assert "| `limits.idle_timeout` | number (ge 600, le 86400) | `600` | RFC 1939" in rows
    assert "| `listeners.N.mode` | `plain` \\| `starttls` \\| `tls` | `starttls` |" in rows


def test_inherited_keys_take_the_comment_of_the_class_that_declares_them() -> None:
    # lockout and scan inherit redis_url from SharedRedis, the sentinel's and the cluster's
    # credentials come from RedisAuth: one comment there describes every such row.
    rows = markdown()
    for section in ("lockout", "scan"):
        for key in (f"{section}.redis_url", f"{section}.redis_sentinel.username",
                    f"{section}.redis_cluster.tls_ca_file"):
            row = next(line for line in rows.splitlines() if line.startswith(f"| `{key}` |"))
            assert not row.endswith("|  |"), row


def test_every_key_says_what_it_does() -> None:
    """A key with no comment above its field shows an empty cell: an admin reading the
    reference would be left to guess (every field's comment is its description)."""
    bare = [line.split(" | ")[0] for line in markdown().splitlines()
            if line.startswith("| `") and line.endswith("|  |")]
    assert bare == []


def test_splice_replaces_only_the_marked_block_or_appends_it() -> None:
    doc = f"# title\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    assert splice(doc, f"{BEGIN}\nnew\n{END}\n") == f"# title\n\n{BEGIN}\nnew\n{END}\n\nafter\n"
    assert splice("# t\n", "X\n") == "# t\n\nX\n"


def test_dump_fills_in_defaults() -> None:
    text = dump(Policy.model_validate({"listeners": [{"name": "a", "port": 1}]}))
    assert "  idle_timeout: 600.0\n" in text and "  mode: starttls\n" in text


def test_dump_shows_where_the_paths_that_default_into_state_dir_are() -> None:
    """Regression (admin review): ``check-config --dump`` printed ``secret_file: null`` and
    ``quarantine_dir: null``; the proxy uses files in state_dir for them."""
    config = Policy.model_validate({"listeners": [{"name": "a", "port": 1}],
                                    "state_dir": "/var/lib/popproxy"})
    text = dump(config)
    assert "  secret_file: null  # default: /var/lib/popproxy/lockout.key\n" in text
    assert "  quarantine_dir: null  # default: /var/lib/popproxy/quarantine\n" in text
    # Still the same policy when loaded: the defaults stay defaults (a lockout key given
    # explicitly is never made by the proxy).
    assert Policy.model_validate(yaml.safe_load(text)) == config
    given = config.model_copy(update={"lockout": config.lockout.model_copy(
        update={"secret_file": Path("/etc/popproxy/lockout.key")})})
    assert "  secret_file: /etc/popproxy/lockout.key\n" in dump(given)  # as given
