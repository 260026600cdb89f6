"""Structured output (constrain.py): every output parses and validates, at T = 0 and T = 1, with se,
standard and members side by side agreeing greedily; bad grammars are a typed error."""

from __future__ import annotations

import json
import re

import pytest
from test_cli import models_args, run

from edge_specens import Ensemble, InvalidParameterError

COLOUR = {"type": "string", "enum": ["red", "green", "blue"]}
CAT = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
RUNS = [
    ("standard", None, None, False),
    ("se", [3, 1], None, False),
    ("se", [2, 1], 8, False),
    ("se", [3, 1], None, True),
]


@pytest.mark.parametrize("strategy,gamma,lookup,parallel", RUNS)
def test_tiny_models_follow_a_regex_and_a_schema(duo, strategy, gamma, lookup, parallel):
    kw = dict(strategy=strategy, gamma=gamma, lookup=lookup, parallel=parallel)
    for text in ("hello world", "the value", "1 2 3"):
        ref = duo.generate(text, max_tokens=12, temperature=0, regex="(yes|no)[.!]", strategy="standard")
        out = duo.generate(text, max_tokens=12, temperature=0, regex="(yes|no)[.!]", **kw)
        assert re.fullmatch(r"(yes|no)[.!]", out.text) and out.finish_reason == "stop"
        assert out.tokens == ref.tokens
        for seed in range(3):
            sampled = duo.generate(text, max_tokens=40, temperature=1.0, seed=seed, json_schema=COLOUR, **kw)
            assert sampled.finish_reason == "stop" and json.loads(sampled.text) in COLOUR["enum"]


def test_bad_constraints_are_typed_errors(duo):
    with pytest.raises(InvalidParameterError, match="grammar"):
        duo.generate("x", max_tokens=3, grammar="start: (((")
    with pytest.raises(InvalidParameterError, match="json_schema"):
        duo.generate("x", max_tokens=3, json_schema="{not json")
    with pytest.raises(InvalidParameterError, match="one of"):
        duo.generate("x", max_tokens=3, regex="a", grammar='root ::= "a"')


def test_cli_flags(tiny_models, tmp_path):
    schema = tmp_path / "colour.json"
    schema.write_text(json.dumps(COLOUR))
    rc, out, err = run(["generate", "hi", *models_args(tiny_models), "--json-schema", str(schema), "--json"])
    assert rc == 0 and json.loads(json.loads(out)["text"]) in COLOUR["enum"]
    rc, out, err = run(["generate", "hi", *models_args(tiny_models), "--grammar", 'root ::= "ok" | "no"', "--json"])
    assert rc == 0 and json.loads(out)["text"] in ("ok", "no")
    rc, out, err = run(["generate", "hi", *models_args(tiny_models), "--regex", "(("])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "regex" in err


def test_the_duo_writes_valid_json(pulled):
    ens = Ensemble.from_paths(pulled, n_ctx=1024)
    try:
        prompt = ens.chat_template.tokens([{"role": "user", "content": "Describe a cat as JSON with name and age."}])
        outs = {}
        for strategy, gamma, lookup, parallel in RUNS:
            res = ens.generate(
                prompt,
                max_tokens=80,
                temperature=0,
                json_schema=CAT,
                strategy=strategy,
                gamma=gamma,
                lookup=lookup,
                parallel=parallel,
            )
            outs[(strategy, str(gamma), lookup, parallel)] = res.text
            cat = json.loads(res.text)
            assert set(cat) == {"name", "age"} and isinstance(cat["age"], int) and isinstance(cat["name"], str)
        assert len(set(outs.values())) == 1, outs  # greedy: every strategy wrote the same object
        for seed in range(3):
            res = ens.generate(prompt, max_tokens=80, temperature=1.0, seed=seed, json_schema=CAT)
            cat = json.loads(res.text)
            assert set(cat) == {"name", "age"} and isinstance(cat["age"], int)
    finally:
        ens.close()
