"""The public surface of `instrumentation`, and what importing it must not drag in."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import instrumentation
from instrumentation import AsyncEvolutionClient, EvolutionClient

EXPECTED_ALL = {
    # DESIGN §4
    "configure",
    "task",
    "track_evolution",
    "with_evolution_tracking",
    "emit_reward",
    "make_link_attributes",
    "make_tag_attributes",
    "EvolutionClient",
    "AsyncEvolutionClient",
    # DESIGN §7: how prompts reach agents
    "get_prompt",
    # DESIGN §7: decisions PPO learns from, and the learned policy that makes them
    "decide",
    "Policy",
    "policy_registry_agent",  # where `train ppo --register` keeps a decision's policies
    # what those return or raise
    "EvolutionClientError",
    "TaskHandle",
    "TracingSession",
    "PromptHandle",
}


def test_all_is_pinned_and_names_live_in_the_package():
    assert set(instrumentation.__all__) == EXPECTED_ALL
    for name in instrumentation.__all__:
        assert getattr(instrumentation, name).__module__ == "instrumentation"


def test_import_does_not_load_the_server_stack():
    code = (
        "import sys, instrumentation\n"
        "heavy = ('fastapi', 'sqlalchemy', 'api', 'evolution_store', 'starlette', 'uvicorn')\n"
        "print(','.join(m for m in heavy if m in sys.modules or any("
        "k.startswith(m + '.') for k in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_starts_no_threads():
    code = "import threading, instrumentation\nprint(threading.active_count())\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def _public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if name[0] != "_"}


def test_client_twins_have_the_same_methods():
    sync, asynchronous = _public_methods(EvolutionClient), _public_methods(AsyncEvolutionClient)
    assert sync - {"close"} == asynchronous - {"aclose"}
    for name in sync - {"close"}:
        assert inspect.iscoroutinefunction(getattr(AsyncEvolutionClient, name)), name
        assert inspect.signature(getattr(EvolutionClient, name)) == inspect.signature(
            getattr(AsyncEvolutionClient, name)
        ), name


def test_every_client_method_is_tested_in_both_twins():
    tests = Path(__file__).parent
    for module in ("test_instrumentation_client.py", "test_instrumentation_async_client.py"):
        text = (tests / module).read_text()
        for name in _public_methods(EvolutionClient) - {"close"}:
            assert f"c.{name}(" in text or f"client.{name}(" in text, (module, name)


def test_sync_client_never_runs_an_event_loop():
    import instrumentation._client as module
    import instrumentation._client_registry as registry

    text = Path(module.__file__).read_text()
    sync = text[text.index("class EvolutionClient(") : text.index("class AsyncEvolutionClient(")]
    assert "asyncio" not in sync and "await" not in sync
    text = Path(registry.__file__).read_text()
    sync = text[text.index("class RegistryMethods(") : text.index("class AsyncRegistryMethods(")]
    assert "asyncio" not in sync and "await" not in sync


def test_no_sql_in_instrumentation():
    package = Path(instrumentation.__file__).parent
    for path in package.glob("*.py"):
        assert not re.search(r"\b(select|insert|text)\(", path.read_text()), path.name


def test_modules_import_no_private_names_from_each_other():
    """A name another module needs is part of its module's surface, so it has no underscore."""
    package = Path(instrumentation.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, (path.name, node.module, private)
