"""The official `openai` package, unchanged, against the gateway's /v1 with a
swarmgate API key as its key: a model list, a chat completion and a streamed
chat completion, each checked on content."""

import openai
import pytest
import requests

from conftest import ADMIN_PASSWORD, MODEL


@pytest.fixture(scope="module")
def client(swarmgate):
    login = requests.post(f"{swarmgate}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()
    r = requests.post(
        f"{swarmgate}/auth/api-keys",
        headers={"Authorization": f"Bearer {login['access_token']}"},
        json={"name": "openai-sdk", "permissions": [f"models.{MODEL}.invoke"], "models": [MODEL]},
    )
    assert r.status_code == 201, r.text
    return openai.OpenAI(base_url=f"{swarmgate}/v1", api_key=r.json()["key"])


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL]


def test_chat_completion(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    assert reply.choices[0].message.content == "Mock reply: you said Hello from the SDK."
    assert reply.usage.prompt_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_completion(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream this please"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 3
    assert "".join(pieces) == "Mock reply: you said stream this please."


def test_unknown_and_refused_models_raise_the_sdks_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])


def test_a_wrong_key_is_an_authentication_error(swarmgate):
    bad = openai.OpenAI(base_url=f"{swarmgate}/v1", api_key="sgk_wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
