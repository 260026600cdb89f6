"""Which tool-call format a chat template speaks, read from the template itself.

The model's own GGUF template renders the tools and the history (chat.py passes `tools=` to it as
Hugging Face and llama.cpp do); what the model then writes is the format it was trained on. One format
is parsed and constrained here, Hermes 2 Pro's, which Qwen2.5 (and Qwen2.5-Coder) use, as llama.cpp
maps them:

    <tool_call>
    {"name": "get_weather", "arguments": {"location": "Paris"}}
    </tool_call>

several calls one after the other, separated by a newline. A template that never reads `tools` has no
tool support, and one that reads it without writing `<tool_call>` speaks another format; both get a
400 naming the template, never a prompt the model cannot answer with a call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidParameterError


@dataclass(frozen=True)
class CallFormat:
    name: str
    open: str  # the trigger: the model opens a call with it (grammar.py constrains what follows)
    close: str
    separator: str  # between two calls
    body_prefix: str = "\n"  # between the opening tag and the JSON
    body_suffix: str = "\n"  # between the JSON and the closing tag
    item_separator: str = ", "  # the JSON spacing the template renders calls with (Jinja's tojson)
    key_separator: str = ": "


HERMES = CallFormat("hermes", "<tool_call>", "</tool_call>", "\n")


def template_name(template) -> str:
    """How a 400 names the template: whose it is (chat.ChatTemplate.owner) and where it came from."""
    if template.fallback:
        return f"the built-in ChatML template ({template.owner} ships no tokenizer.chat_template)"
    return f"the chat template of {template.owner} (tokenizer.chat_template)"


def reads_tools(source: str) -> bool:
    """Does the Jinja template use the `tools` variable at all?"""
    import jinja2
    from jinja2 import meta
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    env = jinja2.Environment(extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, "jinja2.ext.loopcontrols"])
    try:
        return "tools" in meta.find_undeclared_variables(env.parse(source))
    except jinja2.TemplateError:
        return False


def call_format(template) -> CallFormat:
    """The format of `template` (a chat.ChatTemplate), or InvalidParameterError naming it."""
    source = template.source
    if template.fallback or not reads_tools(source):
        raise InvalidParameterError(
            f"tools: {template_name(template)} has no tool support (it never renders `tools`); "
            "tool calls need a model whose template does, e.g. Qwen2.5 or Qwen2.5-Coder Instruct"
        )
    if HERMES.open not in source:
        raise InvalidParameterError(
            f"tools: {template_name(template)} renders tools but not in the <tool_call> (Hermes / Qwen2.5) "
            "format, the one edge_specens parses"
        )
    return HERMES
