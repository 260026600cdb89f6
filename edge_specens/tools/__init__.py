"""Tool calling: OpenAI's tools on every chat face (Python API, /v1/chat/completions, Ollama's /api/chat).

- spec.py: the request's tools, tool_choice and parallel_tool_calls, checked (limits, names, schemas);
- formats.py: which call format the model's own chat template speaks (Hermes / Qwen2.5 `<tool_call>`);
- history.py: assistant tool_calls and tool results in the conversation, as the template reads them;
- grammar.py: the llguidance grammar the calls are generated under (lazy: free text until `<tool_call>`);
- parse.py: the generated text read incrementally into content and calls;
- chunks.py: OpenAI's message.tool_calls and streamed tool_calls deltas.
"""

from .chunks import ToolChatFormat
from .formats import HERMES, CallFormat, call_format
from .grammar import Spelling, check_combination, constrain_tools, spelling, tool_grammar
from .parse import CallParser, ParsedCall, parse_all
from .spec import MAX_TOOLS, MAX_TOOLS_CHARS, Tool, ToolRequest, tool_request

__all__ = [
    "HERMES",
    "MAX_TOOLS",
    "MAX_TOOLS_CHARS",
    "CallFormat",
    "CallParser",
    "ParsedCall",
    "Tool",
    "ToolChatFormat",
    "ToolRequest",
    "Spelling",
    "call_format",
    "check_combination",
    "constrain_tools",
    "parse_all",
    "spelling",
    "tool_grammar",
    "tool_request",
]
