"""Structured output (constrain.py): every output parses and validates, at T = 0 and T = 1, with se,
standard and members side by side agreeing greedily; bad grammars are a typed error."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

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


# ---------------------------------------------------------------------- reliability probe N9-N12 (issue 29)
@contextmanager
def no_file_access(names):
    """Records every attempt to stat or open one of the files `names` name inside the block (and makes
    it fail): grammar and schema strings are text, and nothing in the API or the server may look for
    a file they name (N9). The calls are recorded as well as refused, because constrain.py turns any
    exception into InvalidParameterError. Other paths pass (FastAPI stats its handlers' source files)."""
    import builtins
    import io
    import os

    watched = {os.path.abspath(os.path.expanduser(n)) for n in names}
    calls: list[tuple[str, object]] = []

    def guard(name, real):
        def guarded(path, *a, **k):
            if isinstance(path, (str, bytes, os.PathLike)):
                p = os.fsdecode(path)
                if p in names or os.path.abspath(os.path.expanduser(p)) in watched:
                    calls.append((name, path))
                    raise AssertionError(f"{name}({path!r}) during a constrained request")
            return real(path, *a, **k)

        return guarded

    patched = [(os, "stat"), (os, "lstat"), (os, "open"), (builtins, "open"), (io, "open")]
    saved = [getattr(mod, name) for mod, name in patched]
    for (mod, name), real in zip(patched, saved):
        setattr(mod, name, guard(name, real))
    try:
        yield calls
    finally:
        for (mod, name), real in zip(patched, saved):
            setattr(mod, name, real)


def secret_files(tmp_path):
    """Files a request might name: each is a valid constraint that would make the output the secret."""
    secret = "S3CRET-" + tmp_path.name
    grammar = tmp_path / "secret.gbnf"
    grammar.write_text(f'root ::= "{secret}"\n')
    schema = tmp_path / "secret.json"
    schema.write_text(json.dumps({"const": secret}))
    return secret, grammar, schema


NAMED_FILES = ["/etc/shadow", "/etc/passwd", "/proc/self/environ", "~/.bashrc", "/nonexistent/x.gbnf"]


def test_a_grammar_or_schema_string_is_never_a_file_name(duo, tiny_models, tmp_path):
    """N9: the API read any file named in `grammar` (or in a string `json_schema`), and its parse
    error quoted the file: `grammar="/etc/shadow"` disclosed its first line."""
    from edge_specens.constrain import grammar_of

    secret, grammar, schema = secret_files(tmp_path)
    names = [*NAMED_FILES, str(tiny_models["small"]), str(grammar), str(schema), "secret.gbnf"]
    errors = []
    with no_file_access(names) as calls:
        for name in names:
            for kw in ({"grammar": name}, {"json_schema": name}):
                for call in (duo.generate, grammar_of):
                    try:
                        if call is grammar_of:
                            grammar_of(**kw)
                        else:
                            duo.generate("x", max_tokens=4, temperature=0, strategy="standard", **kw)
                        errors.append(f"{kw} was accepted")
                    except InvalidParameterError as e:
                        errors.append(str(e))
    assert calls == []
    assert len(errors) == 4 * len(names) and not any(secret in e or "accepted" in e for e in errors), errors
    # the message says what to do instead
    with pytest.raises(InvalidParameterError, match="not a file name"):
        grammar_of(grammar=str(grammar))
    with pytest.raises(InvalidParameterError, match="not a path"):
        grammar_of(grammar=grammar)


def test_invalid_grammars_are_typed_errors(duo):
    """N10: GbnfToLarkError, RecursionError and bytes used to escape as untyped exceptions."""
    cases = [
        ({"grammar": "root ::= ("}, "grammar: Expected"),
        ({"grammar": "foo"}, "grammar: Expected ::="),
        ({"grammar": b'root ::= "a"'}, "grammar must be text \\(str\\), not bytes"),
        ({"regex": b"a+"}, "regex must be text"),
        ({"grammar": 5}, "grammar must be a string"),
        ({"json_schema": 5}, "json_schema must be a JSON object"),
        ({"json_schema": "[1, 2]"}, "json_schema must be a JSON object"),
        ({"grammar": "root ::= " + "(" * 5000 + '"a"' + ")" * 5000}, "grammar is nested too deeply"),
        ({"json_schema": '{"type":"object","properties":{"a":' * 5000}, "json_schema is nested more than 128"),
        ({"grammar": 'root ::= "' + "a" * 70_000 + '"'}, "grammar has 70011 characters; at most 65536"),
        ({"regex": "a" * 70_000}, "regex has 70000 characters"),
    ]
    for kw, match in cases:
        with pytest.raises(InvalidParameterError, match=match):
            duo.generate("x", max_tokens=3, **kw)
    assert duo.generate("x", max_tokens=3, temperature=0, grammar='root ::= "ok"').text == "ok"


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def test_deep_or_cyclic_schema_dicts_are_refused_before_llguidance(duo):
    """N11: a dict 10,000 levels deep segfaulted the process inside llguidance's native code."""
    from edge_specens.constrain import MAX_SCHEMA_DEPTH

    cyclic: dict = {"type": "object"}
    cyclic["properties"] = {"a": cyclic}
    shared: dict = {"type": "string"}
    for _ in range(60):  # 2^60 paths through 61 distinct dicts
        shared = {"anyOf": [shared, shared]}
    for schema, match in ((nested(10_000), "nested more than 128"), (cyclic, "nested"), (shared, "keys and items")):
        with pytest.raises(InvalidParameterError, match=match):
            duo.generate("x", max_tokens=3, json_schema=schema)
    # the limit counts dicts and lists: 63 object levels are 127 containers, and pass the check
    assert 2 * 63 + 1 <= MAX_SCHEMA_DEPTH < 2 * 64 + 1
    with pytest.raises(InvalidParameterError, match="nested more than"):
        duo.generate("x", max_tokens=3, json_schema=nested(64))
    out = duo.generate("x", max_tokens=200, temperature=0, json_schema=nested(20))
    if out.finish_reason == "stop":
        json.loads(out.text)


UNSATISFIABLE = [
    {"grammar": "root ::= a\na ::= b\nb ::= a"},
    {"grammar": 'root ::= root "x" | root'},
    {"json_schema": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}},
]


@pytest.mark.parametrize("kw", UNSATISFIABLE)
@pytest.mark.parametrize("strategy", ["standard", "se"])
def test_a_constraint_no_text_satisfies_is_refused(duo, kw, strategy):
    """N12: these returned "" with finish_reason "stop", as if the model had chosen to say nothing."""
    option = next(iter(kw))
    with pytest.raises(InvalidParameterError, match=f"^{option}: no text satisfies"):
        duo.generate("x", max_tokens=24, strategy=strategy, **kw)
    assert duo.generate("x", max_tokens=3, temperature=0, strategy=strategy).stats.new_tokens >= 1  # still usable


@pytest.mark.parametrize("strategy", ["standard", "se"])
def test_a_constraint_that_fails_midway_ends_with_finish_reason_error(duo, strategy):
    """N12: llguidance's lexer gives up on this counted regex after its first token; the generation
    then ended with "stop", as if the text were complete."""
    out = duo.generate("x", max_tokens=8, temperature=0, strategy=strategy, regex="((a{100}){100}){100}")
    assert out.finish_reason == "error"
    assert out.stats.note.startswith("constraint failed: ") and "too many expressions" in out.stats.note
    ok = duo.generate("x", max_tokens=8, temperature=0, strategy=strategy, regex="a{3}")
    assert (ok.text, ok.finish_reason, ok.stats.note) == ("aaa", "stop", None)


def test_cli_reads_constraint_files_and_refuses_bad_ones(tiny_models, tmp_path):
    """The CLI keeps `--grammar FILE` / `--json-schema FILE` (read there, bounded); a bad grammar is
    exit 2 with one line (N10: it was exit 1 with a GbnfToLarkError)."""
    import os

    args = ["generate", "hi", *models_args(tiny_models), "-n", "4", "--temp", "0"]
    grammar = tmp_path / "ok.gbnf"
    grammar.write_text('root ::= "ok"\n')
    rc, out, err = run([*args, "--grammar", str(grammar)])
    assert rc == 0 and out.strip() == "ok", err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.gbnf"
    big.write_text('root ::= "' + "a" * 70_000 + '"')
    for value, message in [
        ("root ::= (", "grammar: Expected ')'"),
        ("missing.gbnf", "no such file: missing.gbnf"),
        (str(tmp_path), "is not a regular file"),
        (str(fifo), "is not a regular file"),
        (str(big), "at most 65536 are allowed"),
        ("root ::= a\na ::= b\nb ::= a", "no text satisfies"),
    ]:
        rc, out, err = run([*args, "--grammar", value])
        assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, (value, rc, err)
    rc, out, err = run([*args, "--json-schema", "nothere.json"])
    assert rc == 2 and "no such file: nothere.json" in err


def test_chat_set_grammar_reads_a_file_as_the_flag_does(tiny_models, tmp_path):
    grammar = tmp_path / "yes.gbnf"
    grammar.write_text('root ::= "yes"\n')
    rc, out, err = run(
        ["chat", *models_args(tiny_models), "-n", "6", "--temp", "0"],
        input=f"/set grammar {grammar}\nhello\n/set grammar missing.gbnf\n/exit\n",
    )
    assert rc == 0, err
    assert 'grammar = root ::= "yes"' in err and "yes" in out and "no such file: missing.gbnf" in err
