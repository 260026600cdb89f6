"""One definition of the generation options (params.GenerationOptions): the facade, the CLI, the
chat API and the server all take exactly those, and the server honours or rejects each."""

from __future__ import annotations

import inspect

import pytest
from fakes import fake_ensemble

from edge_specens import GENERATION_OPTIONS, Ensemble, InvalidParameterError
from edge_specens.params import GenerationOptions


def test_the_names_come_from_one_definition():
    assert GENERATION_OPTIONS == (
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "seed",
        "stop",
        "repeat_penalty",
        "repeat_last_n",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "strategy",
        "gamma",
        "lookup",
        "json_schema",
        "grammar",
        "regex",
        "parallel",
        "logprobs",
    )
    defaults = GenerationOptions()
    for method in (Ensemble.generate, Ensemble.stream):  # after self and prompt; `wait` is no generation option
        params = [p for p in list(inspect.signature(method).parameters.values())[2:] if p.name != "wait"]
        assert sorted(p.name for p in params) == sorted(GENERATION_OPTIONS), method.__name__
        for p in params:  # same defaults as the definition (stop: None stands for no stop strings)
            assert p.default == getattr(defaults, p.name) or (p.name in ("stop", "logit_bias") and p.default is None), (
                p.name
            )


def test_the_cli_has_a_flag_for_every_option():
    from edge_specens.cli.main import generate

    names = {p.name for p in generate.params}
    assert set(GENERATION_OPTIONS) <= names


def test_unknown_options_are_a_typed_error():
    ens = fake_ensemble()
    with pytest.raises(InvalidParameterError, match="unknown option.*gama"):
        ens.events([1, 2, 3], gama=3)
    with pytest.raises(InvalidParameterError, match="unknown parameter"):
        ens.create_chat_completion([{"role": "user", "content": "hi"}], gama=3)


def test_the_server_schema_honours_every_option():
    pytest.importorskip("pydantic")
    from edge_specens.server.schema import ChatCompletionRequest, CompletionRequest, exception_status

    values = dict(
        max_tokens=7,
        temperature=0.0,
        top_k=3,
        top_p=0.9,
        min_p=0.1,
        seed=5,
        stop=["x"],
        strategy="se",
        gamma=[2, 1],
        lookup=4,
        parallel=True,
        repeat_penalty=1.1,
        repeat_last_n=32,
        frequency_penalty=0.5,
        presence_penalty=0.25,
        logit_bias={"7": -100},
        regex="[0-9]+",
        json_schema={"type": "object"},
        grammar='root ::= "a"',
        logprobs=3,
    )
    assert set(values) == set(GENERATION_OPTIONS)
    # chat spells logprobs as OpenAI's pair (logprobs: true, top_logprobs: N), completions as logprobs: N
    chat_values = {**{k: v for k, v in values.items() if k != "logprobs"}, "logprobs": True, "top_logprobs": 3}
    for cls, extra, sent in (
        (ChatCompletionRequest, {"messages": [{"role": "user", "content": "hi"}]}, chat_values),
        (CompletionRequest, {"prompt": "hi"}, values),
    ):
        assert set(GENERATION_OPTIONS) <= set(cls.model_fields)
        kw = cls(**extra, **sent).generation_kwargs(100)
        assert kw == values
        assert cls(**extra).generation_kwargs(100) == {"max_tokens": 100}  # the rest keep the API's defaults
    # a value the API refuses is a 400 naming the option, never silently ignored
    ens = fake_ensemble()
    with pytest.raises(InvalidParameterError) as e:
        ens.events([1, 2, 3], lookup=-1)
    status, body = exception_status(e.value)
    assert status == 400 and body["error"]["param"] == "lookup"
