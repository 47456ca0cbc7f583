"""The load_data spec file: how rows become text (`text_cols` + `text_template`), chat rows (`{"chat": true}`),
or the user_script functions it names."""

from __future__ import annotations

from pathlib import Path

from slmforge.contract.files import read_json_object
from slmforge.data import chat_rows, user_script
from slmforge.data.template import Template
from slmforge.errors import InvalidInput


def read_spec(path: Path) -> tuple[list[str], Template | None, dict]:
    """(text_cols, template, user functions) of a template spec; ([messages], None, {}) of `{"chat": true}`
    (chat rows); ([], None, {...}) of a spec naming a user pre_process function."""
    spec = read_json_object(path, "a JSON object with text_cols and text_template")
    user = {k: spec.pop(k) for k in user_script.KINDS if k in spec}
    for kind, comp in user.items():
        if not (isinstance(comp, dict) and isinstance(comp.get("type"), str) and isinstance(comp.get("params"), dict)):
            raise InvalidInput(f"{path}: '{kind}' must be {{\"type\": NAME, \"params\": {{...}}}}")
    if "pre_process_data" in user:
        return [], None, user
    if spec.get("chat") is True:
        if spec.get("text_template"):
            raise InvalidInput(f"{path}: chat rows are rendered with the tokenizer's chat template; "
                               "give chat or text_template, not both")
        return [chat_rows.COLUMN], None, user
    cols, text = spec.get("text_cols"), spec.get("text_template")
    if not (isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)):
        raise InvalidInput(f"{path}: text_cols must be a non-empty list of column names")
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"{path}: text_template must be a non-empty string")
    template = Template(text)
    unknown = [f for f in template.fields if f not in cols]
    if unknown:
        raise InvalidInput(f"{path}: text_template placeholder '{{{unknown[0]}}}' is not in text_cols {cols}")
    template.answer_field  # noqa: B018 - raises when the template has no placeholder
    return cols, template, user
