"""The official `anthropic` package, unchanged, against swarmgate with a
swarmgate API key as its key: the gateway holds the provider key (set by
ANTHROPIC_API_KEY, its base URL by CLAUDE_BASE_URL), sends it upstream as
x-api-key, and meters usage from Anthropic's own input/output tokens."""

import anthropic
import pytest
import requests

from conftest import ADMIN_PASSWORD, CLAUDE_MODEL


@pytest.fixture(scope="module")
def admin_token(swarmgate):
    login = requests.post(f"{swarmgate}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    return login.json()["access_token"]


@pytest.fixture(scope="module")
def client(swarmgate, admin_token):
    r = requests.post(
        f"{swarmgate}/auth/api-keys",
        headers={"Authorization": f"Bearer {admin_token}"},
        json={"name": "anthropic-sdk", "permissions": [f"models.{CLAUDE_MODEL}.invoke"]},
    )
    assert r.status_code == 201, r.text
    return anthropic.Anthropic(base_url=swarmgate, api_key=r.json()["key"], max_retries=0)


def claude_usage(swarmgate, admin_token):
    r = requests.get(
        f"{swarmgate}/usage", params={"group_by": "model"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    items = [i for i in r.json()["items"] if i["group"] == CLAUDE_MODEL]
    return items[0] if items else None


def test_a_message(client):
    message = client.messages.create(
        model=CLAUDE_MODEL, max_tokens=64,
        messages=[{"role": "user", "content": "Hello from the Anthropic SDK"}],
    )
    assert message.content[0].text == "Mock reply: you said Hello from the Anthropic SDK."
    assert message.usage.input_tokens == 5
    assert message.usage.output_tokens == 11


def test_counting_tokens(client):
    count = client.messages.count_tokens(
        model=CLAUDE_MODEL, messages=[{"role": "user", "content": "Hello from the Anthropic SDK"}],
    )
    assert count.input_tokens == 5


def test_a_streamed_message_and_its_usage_is_recorded(swarmgate, admin_token, client):
    before = claude_usage(swarmgate, admin_token)
    before = before["total_tokens"] if before else 0
    with client.messages.stream(
        model=CLAUDE_MODEL, max_tokens=64,
        messages=[{"role": "user", "content": "stream this please"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 3
    assert "".join(pieces) == "Mock reply: you said stream this please."
    spent = final.usage.input_tokens + final.usage.output_tokens
    for _ in range(100):
        now = claude_usage(swarmgate, admin_token)
        if now and now["total_tokens"] - before == spent:
            break
        import time
        time.sleep(0.05)
    assert now["total_tokens"] - before == spent


def test_a_wrong_key_and_a_model_not_granted_raise_the_sdks_errors(swarmgate, client):
    bad = anthropic.Anthropic(base_url=swarmgate, api_key="sgk_wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=CLAUDE_MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(model="claude-other", max_tokens=8, messages=[{"role": "user", "content": "x"}])
