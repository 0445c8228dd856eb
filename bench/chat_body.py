"""The chat completion the bench scripts send: about 1 KiB, a system
prompt and a question, max_tokens 64; the same bytes in every script so
their figures compare."""

import json

WORDS = "Plan the next step of the swarm's task and say which agent should take it. " * 13


def chat_body(stream=False):
    body = {"model": "mock-model", "max_tokens": 64, "messages": [
        {"role": "system", "content": "You are the planner of an agent swarm. " + WORDS[:800]},
        {"role": "user", "content": "What should happen next?"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body)
