"""Writes docs/crd-reference.md from the CRD, the one source of the schema: `python scripts/crd_reference.py`.

tests/packaging/test_docs.py fails when the committed reference differs from what this prints, so the two never drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD = REPO_ROOT / "crds" / "djangomigrations.djangoops.dev.yaml"
REFERENCE = REPO_ROOT / "docs" / "crd-reference.md"


def render() -> str:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    names = crd["spec"]["names"]
    lines = [
        "# DjangoMigration reference",
        "",
        f"Generated from `crds/{CRD.name}` by `scripts/crd_reference.py`; do not edit by hand.",
        "`kubectl explain djangomigration.spec` shows the same descriptions.",
        "",
        f"- Group and version: `{crd['spec']['group']}/{version['name']}`, kind `{names['kind']}`, plural "
        f"`{names['plural']}`, short names {', '.join(f'`{n}`' for n in names.get('shortNames', []))}",
        f"- Scope: {crd['spec']['scope']}; status subresource: "
        f"{'yes' if 'status' in version.get('subresources', {}) else 'no'}",
        "",
        _one_line(schema["description"]),
        "",
        "## Printer columns (`kubectl get djm`)",
        "",
        "| Column | Path | Meaning |",
        "|---|---|---|",
        *(f"| {c['name']} | `{c['jsonPath']}` | {_one_line(c.get('description', ''))} |"
          for c in version.get("additionalPrinterColumns", [])),
        "",
        "## Rules checked at apply time",
        "",
        *_rules(schema, ""),
    ]
    for section in ("spec", "status"):
        lines += ["", f"## {section}", "", "| Field | Type | Default | Description |", "|---|---|---|---|"]
        lines += _fields(schema["properties"][section], section)
    return "\n".join(lines) + "\n"


def _fields(node: dict[str, Any], path: str) -> list[str]:
    rows = []
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}"
        kind = child.get("type", "object")
        if kind == "array":
            kind = f"[]{child.get('items', {}).get('type', 'object')}"
        if "enum" in child:
            kind += " (" + " \\| ".join(str(v) for v in child["enum"]) + ")"
        required = " **required**" if name in node.get("required", []) else ""
        default = f"`{child['default']}`" if "default" in child else ""
        rows.append(f"| `{child_path}`{required} | {kind} | {default} | {_one_line(child.get('description', ''))} |")
        rows += _fields(child, child_path)
        if child.get("type") == "array":
            rows += _fields(child.get("items", {}), f"{child_path}[]")
    return rows


def _rules(node: dict[str, Any], path: str) -> list[str]:
    rules = node.get("x-kubernetes-validations", [])
    rows = [f"- `{path or '(root)'}`: {_one_line(rule['message'])}" for rule in rules]
    for name, child in node.get("properties", {}).items():
        rows += _rules(child, f"{path}.{name}".lstrip("."))
        if child.get("type") == "array":
            rows += _rules(child.get("items", {}), f"{path}.{name}[]".lstrip("."))
    return rows


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


if __name__ == "__main__":
    REFERENCE.write_text(render())
