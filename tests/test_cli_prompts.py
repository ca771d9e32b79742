"""`evolution-store prompts …`: each command against the store in-process (`--db`, both
backends) and against a running server (`--url`); tables for people, `--json` for scripts,
one-line errors with a non-zero exit."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from evolution_store.cli import cli

TEMPLATE = "You answer {{ customer }}'s question.\nBe brief."


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["prompts", *args], env=env)


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def as_json(*args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(*args, "--json", env=env))


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """The error line of a command that must fail with exit 1, one line on stderr."""
    result = invoke(*args, env=env)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return result.stderr.strip()


def create(where: list[str], content: str = TEMPLATE, *extra: str) -> dict[str, Any]:
    return as_json("create", *where, "--agent", "support", "--content", content, *extra)


# -- in-process, both backends ------------------------------------------------------------------


def test_lifecycle_approval_and_rollback(store_url, tmp_path):
    db = ["--db", store_url]
    v1 = create(db, TEMPLATE, "--status", "candidate", "--note", "first")
    assert (v1["agent"], v1["version"], v1["status"], v1["labels"]) == (
        "support",
        1,
        "candidate",
        ["latest"],
    )
    approved = as_json("approve", v1["id"], *db, "--note", "looks right")
    assert (approved["status"], approved["approved_by"]) == ("production", "local")
    assert approved["labels"] == ["latest", "production"]

    # v2 from a file, derived from v1, labelled; it walks the lifecycle to candidate.
    path = tmp_path / "v2.j2"
    path.write_text(TEMPLATE + "\nCite the order number.")
    v2 = as_json(
        "create", *db, "--agent", "support", "--file", str(path), "--parent", v1["id"],
        "--label", "beta", "--created-by", "apo",
    )  # fmt: skip
    assert (v2["version"], v2["status"], v2["parent_ids"]) == (2, "draft", [v1["id"]])
    assert v2["labels"] == ["beta", "latest"] and v2["created_by"] == "apo"
    assert "is experimental" in ok("status", v2["id"], "experimental", *db)
    assert as_json("status", v2["id"], "candidate", *db, "--note", "passes")["note"] == "passes"

    out = ok("approve", v2["id"], *db)
    assert f"support v2 ({v2['id']}) is production, approved by local" in out
    assert as_json("show", v1["id"], *db)["status"] == "archived"

    # Rollback: approving the archived v1 again makes it production and archives v2.
    back = as_json("approve", v1["id"], *db)
    assert back["status"] == "production" and "production" in back["labels"]
    assert as_json("show", v2["id"], *db)["status"] == "archived"


def test_list_show_diff_lineage(store_url):
    db = ["--db", store_url]
    v1 = create(db)
    v2 = create(db, TEMPLATE.replace("Be brief.", "Be thorough."), "--parent", v1["id"])
    other = as_json("create", *db, "--agent", "billing", "--content", "Bill {{ x }}")

    table = ok("list", *db)
    lines = table.splitlines()
    assert lines[0].split() == ["id", "agent", "version", "status", "labels", "created_by",
                                "created"]  # fmt: skip
    assert set(lines[1]) == {"-", " "}
    assert len(lines) == 5 and all(p["id"] in table for p in (v1, v2, other))

    page = as_json("list", *db, "--agent", "support")
    assert [p["version"] for p in page["items"]] == [2, 1] and page["next_cursor"] is None
    assert [p["id"] for p in as_json("list", *db, "--label", "latest", "--agent", "support")[
        "items"]] == [v2["id"]]  # fmt: skip
    first = as_json("list", *db, "--limit", "1")
    assert len(first["items"]) == 1 and first["next_cursor"]
    assert f"more: --cursor {first['next_cursor']}" in ok("list", *db, "--limit", "1")
    rest = as_json("list", *db, "--cursor", first["next_cursor"])
    assert len(rest["items"]) == 2
    assert "no prompts" in ok("list", *db, "--status", "production")

    card = ok("show", v2["id"], *db)
    assert f"parents   {v1['id']}" in card and card.rstrip().endswith("Be thorough.")

    change = as_json("diff", v2["id"], "--against", v1["id"], *db)
    assert (change["from"], change["to"]) == (v1["id"], v2["id"])
    text = ok("diff", v2["id"], "--against", v1["id"], *db)
    assert "-Be brief.\n+Be thorough." in text
    assert "have the same content" in ok("diff", v1["id"], "--against", v1["id"], *db)

    family = as_json("lineage", v1["id"], *db)
    assert family["prompt"]["id"] == v1["id"]
    assert [p["id"] for p in family["descendants"]] == [v2["id"]]
    rows = ok("lineage", v2["id"], *db).splitlines()
    assert rows[2].split()[:4] == ["ancestor", v1["id"], "1", "draft"]
    assert rows[3].split()[:4] == ["this", v2["id"], "2", "draft"]


def test_the_same_prompt_again_is_the_stored_one(store_url):
    db = ["--db", store_url]
    first = ok("create", *db, "--agent", "support", "--content", TEMPLATE)
    assert first.startswith("created support v1 (")
    again = ok("create", *db, "--agent", "support", "--content", TEMPLATE)
    assert again.startswith("already stored: support v1 (")


def test_errors_are_one_line(store_url):
    db = ["--db", store_url]
    v1 = create(db)
    assert refused("show", "nope", *db) == "Error: prompt 'nope' not found"
    illegal = refused("status", v1["id"], "candidate", *db)
    assert illegal.startswith("Error: conflict: ") and "allowed moves: experimental" in illegal
    assert refused("approve", v1["id"], *db).startswith("Error: conflict: ")
    bad = refused("create", *db, "--agent", "support", "--content", "Hi {{ name")
    assert bad.startswith("Error: invalid input: content: ") and "line 1" in bad
    missing = refused("create", *db, "--agent", "a", "--content", "x", "--parent", "ghost")
    assert "invalid input" in missing and "ghost" in missing
    assert "invalid input" in refused("create", *db, "--agent", "a", "--content", "x",
                                      "--label", "production")  # fmt: skip
    assert "not found" in refused("diff", v1["id"], "--against", "ghost", *db)
    # Nothing was half-written by the refusals.
    assert [p["id"] for p in as_json("list", *db)["items"]] == [v1["id"]]


def test_usage_errors(tmp_path):
    db = ["--db", f"sqlite:///{tmp_path / 'u.db'}"]
    both = invoke("create", *db, "--agent", "a", "--content", "x", "--file", __file__)
    assert both.exit_code == 2 and "--content TEXT or --file PATH" in both.stderr
    neither = invoke("create", *db, "--agent", "a")
    assert neither.exit_code == 2
    two_targets = invoke("list", *db, "--url", "http://127.0.0.1:9")
    assert two_targets.exit_code == 2 and "not both" in two_targets.stderr
    assert invoke("status", "x", "sideways", *db).exit_code == 2


def test_a_bad_database_url_is_one_line():
    assert refused("list", "--db", "mysql://x/y").startswith("Error: cannot open mysql://x/y")


def test_default_database_from_the_environment(tmp_path):
    env = {"EVOLUTION_STORE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    created = as_json("create", "--agent", "a", "--content", "x", env=env)
    assert as_json("show", created["id"], env=env)["id"] == created["id"]
    assert (tmp_path / "env.db").exists()


def test_every_command_has_help():
    for name, command in cli.commands["prompts"].commands.items():
        assert command.help and command.get_short_help_str(), name
        assert "--db" in invoke(name, "--help").stdout


# -- against a running server ---------------------------------------------------------------------


def test_create_approve_show_over_http(live_server, store_url):
    server = live_server(store_url, otlp_http=False)
    url = ["--url", server.url]
    v1 = create(url, TEMPLATE, "--status", "candidate")
    assert create(url, TEMPLATE, "--status", "candidate")["id"] == v1["id"]
    assert ok("create", *url, "--agent", "support", "--content", TEMPLATE).startswith("stored ")
    approved = as_json("approve", v1["id"], *url)
    assert (approved["status"], approved["approved_by"]) == ("production", "anonymous")
    shown = as_json("show", v1["id"], *url)
    assert shown == approved
    v2 = create(url, TEMPLATE + "!", "--parent", v1["id"])
    assert "+Be brief.!" in ok("diff", v2["id"], "--against", v1["id"], *url)
    assert [p["id"] for p in as_json("lineage", v2["id"], *url)["ancestors"]] == [v1["id"]]
    assert as_json("status", v2["id"], "archived", *url)["status"] == "archived"
    assert len(as_json("list", *url, "--agent", "support")["items"]) == 2
    assert refused("show", "nope", *url) == "Error: prompt 'nope' not found"
    assert refused("status", v2["id"], "draft", *url).startswith("Error: conflict: ")
    assert refused("create", *url, "--agent", "a", "--content", "{% if %}").startswith(
        "Error: invalid input: content: "
    )


def test_keys_over_http(live_server, tmp_path):
    server = live_server(f"sqlite:///{tmp_path / 'keys.db'}", otlp_http=False,
                         api_keys="writer-key,reader-key:ro")  # fmt: skip
    url = ["--url", server.url]
    missing = refused("list", *url)
    assert "missing API key" in missing and "--api-key" in missing
    v1 = create([*url, "--api-key", "writer-key"], TEMPLATE, "--status", "candidate")
    reader = {"EVOLUTION_API_KEY": "reader-key"}
    assert as_json("show", v1["id"], *url, env=reader)["status"] == "candidate"
    assert refused("approve", v1["id"], *url, env=reader) == (
        "Error: refused: this API key is read-only"
    )
    approved = as_json("approve", v1["id"], *url, env={"EVOLUTION_API_KEY": "writer-key"})
    assert approved["approved_by"] == hashlib.sha256(b"writer-key").hexdigest()[:16]
    assert "writer-key" not in json.dumps(approved)


@pytest.mark.parametrize("command", [["list"], ["show", "x"]])
def test_an_unreachable_server_is_one_line(command):
    error = refused(*command, "--url", "http://127.0.0.1:9")
    assert error.startswith("Error: cannot reach http://127.0.0.1:9")
