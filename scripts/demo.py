"""`make demo`: one HumanEval-style prompt on the default duo, `standard` vs `se` at T = 0.

Prints both answers (they are identical: SE is exact), both speeds and the speed-up.
"""

from __future__ import annotations

import sys

from edge_specens import Ensemble
from edge_specens.chat import chat_template

PROMPT = '''Complete this Python function:
```python
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
```'''


def main() -> int:
    preset = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-duo"
    ens = Ensemble.from_preset(preset, n_ctx=2048)
    prompt = chat_template(ens).tokens([{"role": "user", "content": PROMPT}])
    ens.generate(prompt, max_tokens=4, temperature=0, strategy="standard")  # warm up, cache the prompt
    runs = {}
    for strategy in ("standard", "se"):
        res = ens.generate(prompt, max_tokens=128, temperature=0, strategy=strategy)
        runs[strategy] = res
        s = res.stats
        acc = f", acceptance {s.acceptance_rate:.0%}" if s.acceptance_rate is not None else ""
        gamma = f" gamma={list(s.gamma)}" if s.gamma else ""
        print(
            f"===== {strategy}{gamma}: {s.new_tokens} tokens, {s.tokens_per_second:.2f} tok/s{acc}, "
            f"llama_decode calls {s.member_calls}"
        )
        print(res.text)
        print()
    std, se = runs["standard"], runs["se"]
    same = std.tokens == se.tokens
    ratio = se.stats.tokens_per_second / std.stats.tokens_per_second
    print(f"identical output: {'yes' if same else 'NO'}")
    print(
        f"standard {std.stats.tokens_per_second:.2f} tok/s, se {se.stats.tokens_per_second:.2f} tok/s, "
        f"speed-up {ratio:.2f}x"
    )
    ens.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
