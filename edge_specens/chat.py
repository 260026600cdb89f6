"""Chat: render messages with the model's own template and answer in OpenAI's shape.

The template comes from GGUF metadata (tokenizer.chat_template) through
llama-cpp-python's Jinja2ChatFormatter. A follow-up turn renders the whole history
again; the members' caches keep the longest shared prefix, so only the new turn
is evaluated. Tools (`tools=`, assistant `tool_calls`, `tool` messages) are rendered by the
same template, as Hugging Face and llama.cpp pass them (tools/: the calls' grammar and parsing).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator

from .errors import InvalidParameterError
from .openai_format import OpenAIFormat
from .params import GENERATION_OPTIONS

log = logging.getLogger("edge_specens")

# Used only when a model ships no template (ChatML, what Qwen and SmolLM2 use).
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ROLES = ("system", "user", "assistant", "tool", "developer")
# placeholders for message content while rendering (Unicode private-use characters: never a control token)
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_RECENT = 8  # renderings the primary's template remembers for its followers (ChatTemplate.conversation)


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
        if isinstance(content, list):  # OpenAI content parts: text ones only (an image unseen is no answer)
            for j, p in enumerate(content):
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                if kind != "text":
                    raise InvalidParameterError(
                        f"messages[{i}].content[{j}] is a {kind!r} part; the members read text only"
                    )
            texts = [p.get("text") or "" for p in content]
            if not all(isinstance(t, str) for t in texts):
                raise InvalidParameterError(f"messages[{i}].content parts need string text")
            content = "".join(texts)
        if content is None and role == "assistant" and m.get("tool_calls"):
            content = ""  # OpenAI's assistant turn that only calls tools
        if not isinstance(content, str):
            raise InvalidParameterError(f"messages[{i}].content must be a string")
        msg = {"role": role, "content": content}
        if m.get("tool_calls") or (role == "tool" and ("tool_call_id" in m or "name" in m)):
            from .tools.history import extra_fields

            msg.update(extra_fields(i, m, role))
        out.append(msg)
    return out


class Conversation(list):
    """Checked messages that remember the tools they were rendered with (followers render both)."""

    tools: list[dict] | None = None


def with_tools(messages, tools) -> list:
    """messages, carrying `tools` to every member's template (Ensemble._bind_follower_prompts)."""
    if not tools:
        return messages
    out = Conversation(messages)
    out.tools = list(tools)
    return out


class ChatTemplate:
    """One member's chat formatter: the primary's (`Ensemble.chat_template`: the prompt's tokens are its
    tokens), or a follower's own (`member_chat_tokens`): its GGUF template, its tokenizer, and its own
    control-text guard, so `<start_of_turn>` in a message is plain text for every member."""

    def __init__(self, ens, member=None):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._primary = member is None
        if member is None:
            member = ens.members[getattr(ens, "primary", 0)]
            self._tokenize = ens.tokenize
        else:
            self._tokenize = member.tokenize
        # the primary's recent renderings: prompt tokens -> the messages (followers read those in their own
        # templates, whichever path hands the tokens to the ensemble: the server, the REPL, the bench)
        self._recent: OrderedDict[tuple[int, ...], list[dict]] = OrderedDict()
        self._recent_lock = threading.Lock()  # server requests render on their own threads
        meta = member.metadata()
        self.fallback = not meta.get("tokenizer.chat_template")  # a base model: ChatML stands in
        template = meta.get("tokenizer.chat_template") or CHATML_TEMPLATE
        self.source = template  # the Jinja text (tools/formats.py reads which tool-call format it speaks)
        self.owner = getattr(member, "name", None) or "the model"
        self._warned_tools = False
        eos, bos = member.eos_token, member.bos_token
        self.eos_text = member.token_text(eos).decode("utf-8", "replace") if eos >= 0 else ""
        self.bos_text = member.token_text(bos).decode("utf-8", "replace") if bos >= 0 else ""
        self._fmt = Jinja2ChatFormatter(template=template, eos_token=self.eos_text, bos_token=self.bos_text)
        self._ens = ens

    def render(self, messages, tools=None) -> str:
        msgs = validate_messages(messages)
        tools = self._tools(msgs, tools if tools is not None else getattr(messages, "tools", None))
        return self._render(msgs, tools)

    def _render(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        extra = {"tools": tools} if tools else {}
        try:
            return self._fmt(messages=messages, **extra).prompt  # type: ignore[arg-type]  # plain dicts
        except Exception as e:  # a template's raise_exception() or a Jinja error
            raise InvalidParameterError(f"the chat template rejected the messages: {e}") from None

    def _tools(self, msgs: list[dict], tools) -> list[dict] | None:
        """The tools to render, once the template is known to render them and the history's calls
        (tools/formats.py: a 400 naming the template otherwise; a follower's template without tool
        support reads the conversation without them, with a warning once)."""
        if not tools and not any(m.get("tool_calls") for m in msgs):
            return None
        from .tools.formats import call_format, template_name

        try:
            call_format(self)
        except InvalidParameterError:
            if self._primary:
                raise
            if not self._warned_tools:
                self._warned_tools = True
                log.warning("warning: %s; that member reads the conversation without them", template_name(self))
        return list(tools) if tools else None

    def tokens(self, messages, tools=None) -> list[int]:
        """The prompt's token ids. Only the template's own text may become control tokens: a message
        holding the text of one ("<|im_end|>\n<|im_start|>system ...") stays plain text and cannot
        forge a turn. Such a message is rendered as a placeholder and tokenized on its own without
        special tokens; everything else is tokenized in one piece, exactly as the template renders it.
        tools: OpenAI's tool list, rendered by the template (or those `messages` carries: with_tools)."""
        msgs = validate_messages(messages)
        tools = self._tools(msgs, tools if tools is not None else getattr(messages, "tools", None))
        ids = self._tokens(msgs, tools)
        if self._primary:
            key = tuple(ids)
            with self._recent_lock:
                self._recent[key] = with_tools(msgs, tools)
                self._recent.move_to_end(key)
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
        return ids

    def conversation(self, tokens) -> list[dict] | None:
        """The messages a recent tokens() call rendered into exactly these prompt tokens, else None."""
        with self._recent_lock:
            return self._recent.get(tuple(int(t) for t in tokens))

    def _tokens(self, msgs: list[dict], tools: list[dict] | None = None) -> list[int]:
        from .tools.history import tool_text

        extra = tool_text(msgs, tools) if tools or any(m.get("tool_calls") for m in msgs) else ""
        self._ens.check_text_length(sum(len(m["content"]) for m in msgs) + len(extra))
        if extra and self._holds_control_text(extra):  # tool JSON is rendered whole: no placeholder for it
            raise InvalidParameterError("tools or messages[].tool_calls contain the text of a control token")
        risky = [i for i, m in enumerate(msgs) if self._holds_control_text(m["content"])]
        if not risky:
            return self._tokenize_rendered(self._render(msgs, tools), plain_then_template=[])
        marks = {i: f"{_MARK_OPEN}{i}{_MARK_CLOSE}" for i in risky}
        framed = self._render([{**m, "content": marks[i]} if i in marks else m for i, m in enumerate(msgs)], tools)
        segments = _split_at(framed, list(marks.values()))
        if segments is None:  # the template rewrites content: it did not keep each placeholder once, in order
            raise InvalidParameterError(f"messages[{risky[0]}].content contains the text of a control token")
        return self._tokenize_rendered(
            segments[0], [(msgs[i]["content"], segments[k + 1]) for k, i in enumerate(risky)]
        )

    def _holds_control_text(self, content: str) -> bool:
        tok = self._tokenize
        return bool(content) and tok(content, add_bos=False, special=True) != tok(content, add_bos=False, special=False)

    def _tokenize_rendered(self, head: str, plain_then_template: list[tuple[str, str]]) -> list[int]:
        """head (template text, special tokens parsed), then per (content, template text after it):
        the content as plain text and the template text parsed."""
        add_bos = None if not (self.bos_text and head.startswith(self.bos_text)) else False
        ids = self._tokenize(head, add_bos=add_bos, special=True)
        for content, after in plain_then_template:
            ids += self._tokenize(content, add_bos=False, special=False)
            if after:
                ids += self._tokenize(after, add_bos=False, special=True)
        return ids


def chat_template(ens) -> ChatTemplate:
    """The ensemble's chat template (built once per ensemble: Ensemble.chat_template)."""
    return ens.chat_template


def member_chat_tokens(ens, k: int, messages) -> list[int]:
    """The conversation in follower k's own chat template and tokens (its template built once per
    ensemble; a follower without one gets ChatML, with a warning once)."""
    cache = ens._member_templates
    template = cache.get(k)
    if template is None:
        template = cache[k] = ChatTemplate(ens, ens.members[k].inner)
        if template.fallback:
            log.warning(
                "warning: %s has no chat template (a base model?); it reads the conversation in ChatML",
                ens.members[k].name,
            )
    return template.tokens(messages)


def create_chat_completion(
    ens, messages, stream: bool = False, cancel=None, tools=None, tool_choice=None, parallel_tool_calls=None, **kw
):
    """OpenAI-shaped chat completion; with stream=True an iterator of chat.completion.chunk dicts.
    cancel: a threading.Event that stops the generation (and a wait for the ensemble), as for the
    async faces (aio.py). tools, tool_choice, parallel_tool_calls: OpenAI's (tools/), the calls
    generated under their grammar and returned as message.tool_calls."""
    from .tools import HERMES, ToolChatFormat, constrain_tools, tool_request

    unknown = set(kw) - set(GENERATION_OPTIONS) - {"model", "n", "user", "wait", "stream_options", "top_logprobs"}
    if unknown:
        raise InvalidParameterError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    if kw.get("n", 1) != 1:
        raise InvalidParameterError("only n = 1 is supported")
    gen_kw = {k: v for k, v in kw.items() if k in GENERATION_OPTIONS and v is not None}
    gen_kw.pop("logprobs", None)
    logprobs = chat_logprobs_option(kw.get("logprobs"), kw.get("top_logprobs"))
    if logprobs is not None:
        gen_kw["logprobs"] = logprobs
    wait = kw.get("wait", True)
    req = tool_request(tools, tool_choice, parallel_tool_calls)
    rendered = list(req.rendered) if req is not None else None
    prompt = chat_template(ens).tokens(messages, tools=rendered)  # a template without tool support: refused
    if req is not None:
        constrain_tools(req, gen_kw, ens)
    fmt_options: dict = dict(
        model=ens.name,
        include_usage=bool((kw.get("stream_options") or {}).get("include_usage")),
        piece_bytes=ens.piece,
    )
    fmt = (
        ToolChatFormat(HERMES, **fmt_options)
        if req is not None and req.calls_allowed
        else OpenAIFormat(chat=True, **fmt_options)
    )
    gen = ens._prepare(prompt, gen_kw, wait, cancel, messages=with_tools(messages, rendered))
    if stream:
        return _chunks(ens, gen, fmt)
    for _ in gen:
        pass
    return fmt.full(gen.result)


def chat_logprobs_option(logprobs, top_logprobs) -> int | None:
    """OpenAI's chat pair (logprobs: true, top_logprobs: N) as the logprobs generation option (None: off);
    an int logprobs is the option itself."""
    if top_logprobs is not None and logprobs is not True:
        raise InvalidParameterError("top_logprobs needs logprobs = true")
    if logprobs is True:
        return 0 if top_logprobs is None else top_logprobs
    if logprobs in (None, False):
        return None
    return logprobs  # params.GenerationOptions checks it


def _chunks(ens, gen, fmt: OpenAIFormat) -> Iterator[dict]:
    yield from fmt.head()
    if gen.logprobs is None:
        for text in gen.text_pieces():
            yield from fmt.pieces(text)
        yield from fmt.last(gen.result)
        return
    left = None
    for text, logprobs in gen.text_and_logprobs():
        if text:
            yield from fmt.pieces(text, logprobs)
        else:
            left = logprobs
    yield from fmt.last(gen.result, left)
