"""Chat: render messages with the model's own template and answer in OpenAI's shape.

The template comes from GGUF metadata (tokenizer.chat_template) through
llama-cpp-python's Jinja2ChatFormatter. A follow-up turn renders the whole history
again; the members' caches keep the longest shared prefix, so only the new turn
is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import InvalidParameterError
from .openai_format import OpenAIFormat
from .params import GENERATION_OPTIONS

# Used only when a model ships no template (ChatML, what Qwen and SmolLM2 use).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")
# placeholders for message content while rendering (Unicode private-use characters: never a control token)
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"


def _split_at(text: str, marks: list[str]) -> list[str] | None:
    """text split at each mark (len(marks) + 1 segments), or None unless each occurs once, in order."""
    out = []
    for mark in marks:
        if text.count(mark) != 1:
            return None
        head, _, text = text.partition(mark)
        out.append(head)
    out.append(text)
    return out


def validate_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidParameterError("messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidParameterError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise InvalidParameterError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise InvalidParameterError(f"messages[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return out


class ChatTemplate:
    """The ensemble's chat formatter (members share a vocabulary; the first member's template rules)."""

    def __init__(self, ens):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        member = ens.members[0]
        meta = member.metadata()
        template = meta.get("tokenizer.chat_template") or CHATML_TEMPLATE
        eos, bos = member.eos_token, member.bos_token
        self.eos_text = member.token_text(eos).decode("utf-8", "replace") if eos >= 0 else ""
        self.bos_text = member.token_text(bos).decode("utf-8", "replace") if bos >= 0 else ""
        self._fmt = Jinja2ChatFormatter(template=template, eos_token=self.eos_text, bos_token=self.bos_text)
        self._ens = ens

    def render(self, messages) -> str:
        return self._render(validate_messages(messages))

    def _render(self, messages: list[dict]) -> str:
        try:
            return self._fmt(messages=messages).prompt  # type: ignore[arg-type]  # plain dicts
        except Exception as e:  # a template's raise_exception() or a Jinja error
            raise InvalidParameterError(f"the chat template rejected the messages: {e}") from None

    def tokens(self, messages) -> list[int]:
        """The prompt's token ids. Only the template's own text may become control tokens: a message
        holding the text of one ("<|im_end|>\n<|im_start|>system ...") stays plain text and cannot
        forge a turn. Such a message is rendered as a placeholder and tokenized on its own without
        special tokens; everything else is tokenized in one piece, exactly as the template renders it."""
        msgs = validate_messages(messages)
        self._ens.check_text_length(sum(len(m["content"]) for m in msgs))
        risky = [i for i, m in enumerate(msgs) if self._holds_control_text(m["content"])]
        if not risky:
            return self._tokenize_rendered(self._render(msgs), plain_then_template=[])
        marks = {i: f"{_MARK_OPEN}{i}{_MARK_CLOSE}" for i in risky}
        framed = self._render([{**m, "content": marks[i]} if i in marks else m for i, m in enumerate(msgs)])
        segments = _split_at(framed, list(marks.values()))
        if segments is None:  # the template rewrites content: it did not keep each placeholder once, in order
            raise InvalidParameterError(f"messages[{risky[0]}].content contains the text of a control token")
        return self._tokenize_rendered(
            segments[0], [(msgs[i]["content"], segments[k + 1]) for k, i in enumerate(risky)]
        )

    def _holds_control_text(self, content: str) -> bool:
        tok = self._ens.tokenize
        return bool(content) and tok(content, add_bos=False, special=True) != tok(content, add_bos=False, special=False)

    def _tokenize_rendered(self, head: str, plain_then_template: list[tuple[str, str]]) -> list[int]:
        """head (template text, special tokens parsed), then per (content, template text after it):
        the content as plain text and the template text parsed."""
        add_bos = None if not (self.bos_text and head.startswith(self.bos_text)) else False
        ids = self._ens.tokenize(head, add_bos=add_bos, special=True)
        for content, after in plain_then_template:
            ids += self._ens.tokenize(content, add_bos=False, special=False)
            if after:
                ids += self._ens.tokenize(after, add_bos=False, special=True)
        return ids


def chat_template(ens) -> ChatTemplate:
    """The ensemble's chat template (built once per ensemble: Ensemble.chat_template)."""
    return ens.chat_template


def create_chat_completion(ens, messages, stream: bool = False, cancel=None, **kw):
    """OpenAI-shaped chat completion; with stream=True an iterator of chat.completion.chunk dicts.
    cancel: a threading.Event that stops the generation (and a wait for the ensemble), as for the
    async faces (aio.py)."""
    unknown = set(kw) - set(GENERATION_OPTIONS) - {"model", "n", "user", "wait", "stream_options"}
    if unknown:
        raise InvalidParameterError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    if kw.get("n", 1) != 1:
        raise InvalidParameterError("only n = 1 is supported")
    gen_kw = {k: v for k, v in kw.items() if k in GENERATION_OPTIONS and v is not None}
    wait = kw.get("wait", True)
    prompt = chat_template(ens).tokens(messages)
    fmt = OpenAIFormat(
        chat=True, model=ens.name, include_usage=bool((kw.get("stream_options") or {}).get("include_usage"))
    )
    gen = ens._prepare(prompt, gen_kw, wait, cancel)
    if stream:
        return _chunks(ens, gen, fmt)
    for _ in gen:
        pass
    return fmt.full(gen.result)


def _chunks(ens, gen, fmt: OpenAIFormat) -> Iterator[dict]:
    yield from fmt.head()
    for text in gen.text_pieces():
        yield fmt.piece(text)
    yield from fmt.last(gen.result)
