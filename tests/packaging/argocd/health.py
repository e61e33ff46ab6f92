"""Runs the chart's Argo CD health check (charts/django-migration-operator/argocd/health.lua) as Argo CD does.

Argo CD evaluates a resource health customization with gopher-lua, a Lua 5.1: the script is one chunk, the live
object is the global `obj` (JSON decoded: objects and arrays become tables, null becomes nil) and the chunk
returns a table {status, message}. Here the interpreter is the real Lua 5.1 of lupa (`lupa.lua51`, PuC-Rio Lua
5.1 built into the wheel), with a stricter sandbox than Argo CD's: no standard library at all, so the check can
only use the language itself.

Shared by tests/packaging/test_argocd_health.py (saved statuses) and tests/e2e/test_chart_install.py (live objects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import lupa.lua51 as lua51

HEALTH_LUA = Path(__file__).resolve().parents[3] / "charts" / "django-migration-operator" / "argocd" / "health.lua"
FIXTURES = Path(__file__).resolve().parent
ARGOCD_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# What a health script may not reach for; gopher-lua in Argo CD has a few of these, the check needs none.
_LIBRARIES = ("io", "os", "debug", "package", "require", "dofile", "loadfile", "load", "loadstring", "string",
              "table", "math", "coroutine")


def evaluate(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """The health the check gives `obj`: {"status": ..., "message": ...}."""
    # types-lupa's LuaRuntime lists unpack_returned_tuples only, not the register_* options lupa documents and has.
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)  # type: ignore[call-arg]
    assert runtime.lua_version == (5, 1)
    names = runtime.globals()
    for name in _LIBRARIES:
        names[name] = None
    names["obj"] = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    assert lua51.lua_type(result) == "table", f"the health check returned {result!r}, not a table"
    health = {str(key): str(value) for key, value in cast("lua51._LuaTable", result).items()}
    assert health.get("status") in ARGOCD_STATUSES, health
    return health


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    """A live object as saved for the tests: what the health check can read, without server bookkeeping."""
    metadata = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {key: metadata[key] for key in ("name", "namespace", "generation") if key in metadata},
            "spec": obj.get("spec", {}), "status": obj.get("status", {})}
