"""`$(VAR)` expansion: the cases of upstream's expansion_test.go that matter for commands and env."""

from __future__ import annotations

import pytest

from devcluster.kubelet.expansion import expand

VARIABLES = {"POD_IP": "127.0.1.7", "EMPTY": "", "NAME": "web"}


@pytest.mark.parametrize(("text", "expected"), [
    ("$(POD_IP):8000", "127.0.1.7:8000"),
    ("--bind=$(POD_IP) --name=$(NAME)", "--bind=127.0.1.7 --name=web"),
    ("$(UNDEFINED)", "$(UNDEFINED)"),
    ("$(EMPTY)x", "x"),
    ("$$(POD_IP)", "$(POD_IP)"),
    ("$$$(POD_IP)", "$127.0.1.7"),
    ("$$", "$"),
    ("cost $5", "cost $5"),
    ("trailing $", "trailing $"),
    ("$(unterminated", "$(unterminated"),
    ("$()", "$()"),
    ('echo "file=$(cat /etc/app/token)"', 'echo "file=$(cat /etc/app/token)"'),
    ("no references", "no references"),
    ("", ""),
])
def test_expand(text: str, expected: str) -> None:
    assert expand(text, VARIABLES) == expected
