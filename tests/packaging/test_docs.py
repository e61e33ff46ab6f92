"""The CRD reference in docs/ is generated from the CRD: it must be the generator's output, byte for byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "crd_reference.py"


def test_crd_reference_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("crd_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    text = generator.render()
    assert "`spec.app.deployment` **required**" in text and "`status.phase`" in text
    assert generator.REFERENCE.read_text() == text, "run `.venv/bin/python scripts/crd_reference.py` and commit"
