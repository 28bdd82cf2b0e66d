"""What the LLM calls of a step see: system prompt, retrieved context, tool results,
history and the user's message, joined into one Arrow buffer per call."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pyarrow as pa

from goldenloop.sim import corpus
from goldenloop.sim.columnar.blocks import json_text
from goldenloop.sim.config import ALL_APPS

if TYPE_CHECKING:
    from goldenloop.sim.columnar.step import Step

I64 = np.ndarray[Any, np.dtype[np.int64]]


class PromptParts:
    """The parts of a step's LLM inputs: system prompt (by app and prompt version),
    retrieved context, tool results, the last three exchanges, the user's message.

    Inputs are joined as UTF-8 bytes straight into one buffer per call (``join``),
    which becomes the Arrow array without another copy: joining 8 KB prompts with
    Arrow kernels (take, then join) or through Python ``str`` copied them three times
    and cost more than everything else in a step together."""

    def __init__(self, step: Step, prompts: list[str], messages: list[str]) -> None:
        batch = step.batch
        self.system = [
            _system_bytes(app, prompt)
            for app, prompt in zip(step.app.tolist(), prompts, strict=True)
        ]
        self.context: list[tuple[bytes, int]] = [_EMPTY] * step.n
        self.tools = [""] * step.n
        self.history = [_last_three(batch.history[row]) for row in step.rows.tolist()]
        self.user = [(("user: " + m).encode(), len(m) + 6) for m in messages]

    def set_context(self, row: int, text: str) -> None:
        self.context[row] = _context_bytes(text)

    def join(
        self,
        rows: I64,
        separators: tuple[str, ...],
        *,
        with_context: bool = True,
        with_tools: bool = False,
    ) -> tuple[pa.Array, I64]:
        """system + sep[0] + [context + tools + sep[1]] + history + user for ``rows``, and
        each one's length in characters (what token counts are estimated from)."""
        first = separators[0].encode()
        second = separators[-1].encode()
        flat: list[bytes] = []
        sizes: list[int] = []
        chars: list[int] = []
        for i in rows.tolist():
            system, system_chars = self.system[i]
            history, history_chars = self.history[i]
            user, user_chars = self.user[i]
            if with_context:
                context, context_chars = self.context[i]
                tools = self.tools[i].encode() if with_tools else b""
                tool_chars = len(self.tools[i]) if with_tools else 0
                flat += (system, first, context, tools, second, history, user)
                sizes.append(
                    len(system) + len(first) + len(context) + len(tools) + len(second)
                    + len(history) + len(user)
                )  # fmt: skip
                chars.append(
                    system_chars + len(separators[0]) + context_chars + tool_chars
                    + len(separators[-1]) + history_chars + user_chars
                )  # fmt: skip
            else:
                flat += (system, first, history, user)
                sizes.append(len(system) + len(first) + len(history) + len(user))
                chars.append(system_chars + len(separators[0]) + history_chars + user_chars)
        offsets = np.zeros(len(sizes) + 1, np.int32)
        np.cumsum(sizes, out=offsets[1:])
        data = b"".join(flat)
        texts = pa.StringArray.from_buffers(len(sizes), pa.py_buffer(offsets), pa.py_buffer(data))
        return texts, np.array(chars, np.int64)


_EMPTY: Final = (b"", 0)


def _last_three(exchanges: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    """The history a prompt carries: the last three exchanges."""
    if len(exchanges) < 2:
        return exchanges[0] if exchanges else _EMPTY
    last = exchanges[-3:]
    return b"".join([text for text, _ in last]), sum(chars for _, chars in last)


@cache
def _system_bytes(app: int, prompt: str) -> tuple[bytes, int]:
    text = corpus.system_prompt(ALL_APPS[app], prompt)
    return text.encode(), len(text)


_CONTEXTS: dict[str, tuple[bytes, int]] = {}


def _context_bytes(text: str) -> tuple[bytes, int]:
    """Retrieved contexts come from a small cached set (``corpus.retrieval_variants``)."""
    found = _CONTEXTS.get(text)
    if found is None:
        found = _CONTEXTS[text] = (text.encode(), len(text))
    return found


_DOC_IDS: dict[tuple[str, ...], str] = {}


def doc_ids_json(found: corpus.Retrieved) -> str:
    text = _DOC_IDS.get(found.doc_ids)
    if text is None:
        text = _DOC_IDS[found.doc_ids] = json_text(list(found.doc_ids))
    return text
