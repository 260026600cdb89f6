"""Fill-in-the-middle on the real qwen2.5-coder-duo: the ensemble writes a function's body between a
given prefix and suffix, the file parses as Python, and `se` writes what `standard` writes at T = 0.
Skipped unless both members are already in the cache (nothing is downloaded here)."""

from __future__ import annotations

import ast

import noise_rule
import pytest

from edge_specens import Ensemble
from edge_specens.fetch import cached_path
from edge_specens.fim import infill_tokens
from edge_specens.presets import load_preset

pytestmark = pytest.mark.real

PREFIX = '''def is_palindrome(text: str) -> bool:
    """True when text reads the same backwards, ignoring case and spaces."""
'''
SUFFIX = """


if __name__ == "__main__":
    print(is_palindrome("Never odd or even"))
"""


@pytest.fixture(scope="module")
def duo():
    if any(cached_path(m) is None for m in load_preset("qwen2.5-coder-duo").members):
        pytest.skip("the qwen2.5-coder-duo models are not in the cache (edge-specens models pull qwen2.5-coder-duo)")
    ens = Ensemble.from_preset("qwen2.5-coder-duo", n_ctx=2048, progress=False)
    yield ens
    ens.close()


def test_the_duo_fills_a_function_body_with_valid_python(duo):
    res = duo.infill(PREFIX, SUFFIX, max_tokens=96, temperature=0, strategy="se")
    print("middle:", repr(res.text))
    tree = ast.parse(PREFIX + res.text + SUFFIX)  # SyntaxError fails the test
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert func.name == "is_palindrome" and any(isinstance(n, ast.Return) for n in ast.walk(func))
    # (the duo's members are instruct models: after the body they may run on in comments until
    # max_tokens, which is why editors cap n_predict; the file stays valid Python either way)
    ref = duo.infill(PREFIX, SUFFIX, max_tokens=96, temperature=0, strategy="standard")
    prompt = infill_tokens(duo, PREFIX, SUFFIX, max_tokens=96)
    noise_rule.check(duo, prompt, ref.tokens, res.tokens)  # identical, or an excused near-tie
