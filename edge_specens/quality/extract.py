"""From a chat reply to a HumanEval program: find the code, whatever shape the model gave it in.

Instruct models answer a "complete this function" request in three shapes: a fenced block with the
whole function (most often), the function bare in the text, or only the body that continues the
given signature. The program is the problem's prompt (its imports and helper functions) followed by
the model's function when it wrote one, else the prompt with the reply appended as its body.
"""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def code_blocks(reply: str) -> list[str]:
    """Fenced code blocks, Python ones (or unlabelled) first; an unclosed last block counts."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    python = [b for lang, b in blocks if lang in ("python", "py", "python3", "")]
    return python + [b for lang, b in blocks if lang not in ("python", "py", "python3", "")]


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in ast.walk(tree))


def _bare_function(reply: str, name: str) -> str | None:
    """The text from `def name(` to the end of its indented body, outside any fence."""
    m = re.search(rf"^([ \t]*)def {re.escape(name)}\s*\(", reply, re.MULTILINE)
    if m is None:
        return None
    lines = reply[m.start() :].splitlines()
    indent = len(m.group(1))
    out = [lines[0][indent:]]
    for line in lines[1:]:
        if line.strip() and (len(line) - len(line.lstrip())) <= indent and not line.lstrip().startswith(("#", ")")):
            break
        out.append(line[indent:] if line[:indent].strip() == "" else line)
    code = "\n".join(out).rstrip() + "\n"
    return code if _defines(code, name) else None


def program(prompt: str, reply: str, entry_point: str) -> str:
    """The prompt's context plus the model's function (or the prompt completed by the reply)."""
    for block in code_blocks(reply):
        if _defines(block, entry_point):
            return _with_context(prompt, block)
    bare = _bare_function(reply, entry_point)
    if bare is not None:
        return _with_context(prompt, bare)
    body = code_blocks(reply)[0] if code_blocks(reply) else reply
    return prompt + body  # a continuation of the signature


def _with_context(prompt: str, code: str) -> str:
    """The prompt (imports, helpers, the stub) then the model's code, which redefines the stub."""
    return prompt + "\n    pass\n\n" + code if prompt.rstrip().endswith(('"""', "'''")) else prompt + "\n" + code
