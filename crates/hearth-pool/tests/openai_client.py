"""Drives a Hearth pool with the official OpenAI Python client (see openai_client.rs).

Usage: openai_client.py BASE_URL API_KEY. Prints one JSON object with what the client saw.
"""
import json
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=60)
seen = {"version": openai.__version__}

seen["models"] = [m.id for m in client.models.list()]

# The client asks for base64 by default and decodes it itself.
embeddings = client.embeddings.create(model="all-minilm-l6-v2", input=["hello world", "a second text"])
seen["embeddings"] = [e.embedding for e in embeddings.data]
seen["embedding_tokens"] = embeddings.usage.prompt_tokens
floats = client.embeddings.create(model="all-minilm-l6-v2", input="one", encoding_format="float")
seen["float_embedding"] = floats.data[0].embedding

chat = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    max_tokens=16,
    temperature=0,
)
seen["chat"] = chat.choices[0].message.content
seen["chat_finish"] = chat.choices[0].finish_reason
seen["chat_usage"] = [chat.usage.prompt_tokens, chat.usage.completion_tokens]

pieces = []
stream = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": "Hi"}],
    stream=True,
    stream_options={"include_usage": True},
)
finish = None
usage = None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage.completion_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
seen["stream_pieces"] = pieces
seen["stream_finish"] = finish
seen["stream_usage"] = usage

try:
    client.embeddings.create(model="no-such-model", input="x")
except openai.NotFoundError as e:
    seen["not_found"] = [e.status_code, e.code]
try:
    openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0).models.list()
except openai.AuthenticationError as e:
    seen["bad_key"] = e.status_code

print(json.dumps(seen))
