"""The text template: render a row, and split it into prompt and answer.

For label-style data the template's last placeholder is the answer, e.g.
`### Text: {phrase}\\n### The tone is:\\n{tone}`: the prompt is everything before `{tone}`,
the answer is the row's `tone`, and whatever follows it (here nothing) is the suffix.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from slmforge.errors import InvalidInput


@dataclass(frozen=True)
class Template:
    text: str

    def __post_init__(self):
        try:
            list(string.Formatter().parse(self.text))
        except ValueError as e:  # "Single '{' encountered": a literal brace is written {{ or }}
            raise InvalidInput(f"template {self.text!r}: {e} (write a literal brace as {{{{ or }}}})") from None

    @property
    def fields(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.text) if name is not None]

    @property
    def answer_field(self) -> str:
        fields = self.fields
        if not fields:
            raise InvalidInput(f"template {self.text!r} has no placeholder to take the answer from")
        return fields[-1]

    def _split(self) -> tuple[str, str]:
        """(prompt part, suffix part) around the last placeholder, both still templates."""
        parts = list(string.Formatter().parse(self.text))
        last = max(i for i, p in enumerate(parts) if p[1] is not None)
        prompt = "".join(_unparse(p) for p in parts[:last]) + _escape(parts[last][0])
        suffix = "".join(_unparse(p) for p in parts[last + 1:])
        return prompt, suffix

    def render(self, row: dict) -> str:
        return self.text.format(**row)

    def prompt(self, row: dict) -> str:
        """The text before the answer, rendered."""
        return self._split()[0].format(**row)

    def completion(self, row: dict) -> str:
        """The answer plus anything the template puts after it, rendered."""
        return str(row[self.answer_field]) + self._split()[1].format(**row)


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _unparse(part: tuple) -> str:
    literal, name, spec, conv = part
    out = _escape(literal)
    if name is not None:
        out += "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
    return out
