"""Chat data: rows of `{"messages": [{"role", "content"}, ...]}` (the OpenAI chat JSONL shape), rendered with
the tokenizer's own chat template, with the loss on the assistant turns only.

A conversation is cut into segments at the turn boundaries the template itself draws: the text before
an assistant turn (rendered with `add_generation_prompt`) and the assistant turn (its content and the
template's end-of-turn text). Segments are tokenized apart, like a template's prompt and completion,
so the mask is exact: every token of an assistant segment is learned, no other token is.

For evaluation a conversation becomes a plain row, `prompt` (everything before its last assistant
turn) and `answer` (that turn's content), with a template `{prompt}{answer}<end of turn>`: every
template-based part of slmforge (evaluate, the int4 answer gates, predict) then reads chat data as is.
"""

from __future__ import annotations

from typing import Any

from slmforge.errors import InvalidInput

COLUMN = "messages"
ROLES = ("system", "user", "assistant", "tool")
_PROBE = [{"role": "user", "content": "\x00q"}, {"role": "assistant", "content": "\x00a"}]


def check_conversation(value: Any) -> str | None:
    """The first problem of one row's `messages`, or None when it is a usable conversation."""
    if not isinstance(value, list):
        return f"'{COLUMN}' must be a list of {{role, content}} objects"
    if not value:
        return f"'{COLUMN}' is an empty conversation"
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            return f"{COLUMN}[{i}] must be an object with role and content"
        unknown = sorted(set(message) - {"role", "content", "name"})
        if unknown:
            return f"{COLUMN}[{i}]: unknown key '{unknown[0]}' (a message has role, content and an optional name)"
        role = message.get("role")
        if role not in ROLES:
            return f"{COLUMN}[{i}].role: {role!r} is not one of {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"{COLUMN}[{i}].content must be a string"
    first = next((i for i, m in enumerate(value) if m["role"] != "system"), 0)
    if value[first]["role"] == "assistant":
        return f"{COLUMN}[{first}] is an assistant turn; a conversation starts with a user turn"
    if not any(m["role"] == "assistant" for m in value):
        return f"'{COLUMN}' has no assistant turn to learn from"
    return None


def _render(tok, messages: list[dict], *, generation_prompt: bool = False) -> str:
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except (ValueError, TypeError) as e:  # no template, or one that rejects the conversation
        raise InvalidInput(f"the tokenizer cannot render chat rows: {str(e).splitlines()[0]}") from None


def segments(tok, messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, is_assistant) pieces whose concatenation is the rendered conversation."""
    out: list[tuple[str, bool]] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tok, messages[:k], generation_prompt=True)
        after = _render(tok, messages[:k + 1])
        if not (before.startswith(done) and after.startswith(before)):
            raise InvalidInput("the tokenizer's chat template renders a conversation differently from its beginning; "
                               "assistant turns cannot be masked exactly with it")
        out += [(before[len(done):], False), (after[len(before):], True)]
        done = after
    rest = _render(tok, messages)[len(done):]
    if rest:
        out.append((rest, False))
    return [(text, assistant) for text, assistant in out if text]


def tokenize_conversation(tok, messages: list[dict], ignore: int, *,
                          loss_on_all: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are the tokens of assistant segments, `ignore` elsewhere (or all, loss_on_all)."""
    ids: list[int] = []
    labels: list[int] = []
    for i, (text, assistant) in enumerate(segments(tok, messages)):
        piece = tok(text, add_special_tokens=i == 0)["input_ids"]
        ids += piece
        labels += piece if assistant or loss_on_all else [ignore] * len(piece)
    return ids, labels


def end_of_turn(tok) -> str:
    """The text the template puts after an assistant turn's content (e.g. `<|im_end|>\\n`)."""
    turn = segments(tok, _PROBE)[1][0]
    return turn[turn.index("\x00a") + 2:]


def eval_row(tok, messages: list[dict]) -> dict[str, str]:
    """The conversation as a plain row: `prompt` before its last assistant turn, `answer` that turn's content."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = _render(tok, messages[:last], generation_prompt=True)
    return {"prompt": prompt, "answer": messages[last]["content"]}


def eval_template(tok) -> str:
    """The `text_template` of eval rows made by `eval_row`, for str.format."""
    return "{prompt}{answer}" + end_of_turn(tok).replace("{", "{{").replace("}", "}}")
