"""Kubernetes `$(VAR)` expansion, as in k8s.io/kubernetes/third_party/forked/golang/expansion.

`$(NAME)` is replaced by the variable's value when it is defined and left as it is otherwise; `$$` is an
escaped `$`; any other `$` is kept.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, variables: Mapping[str, str]) -> str:
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:  # an unterminated reference stays as it is
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2:closer]
                    out.append(variables.get(name, f"$({name})"))
                    advance = closer - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]
