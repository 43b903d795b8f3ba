"""The `openai` Python package as a client of Seer's HTTP API, for
tests/tests/http.rs. Each case prints one JSON object; the Rust test asserts
on it. Runs with the pinned venv from scripts/llama-cpp-venv.sh.

Usage: openai_client.py BASE_URL API_KEY CASE [ARG]
"""

import json
import sys

import openai

QUESTION = "What is the capital of France?"


def client(base, key, **kw):
    return openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120, **kw)


def case_basics(c):
    out = {}
    out["models"] = [m.id for m in c.models.list().data]
    r = c.chat.completions.create(
        model="seer", messages=[{"role": "user", "content": QUESTION}]
    )
    out["whole"] = r.choices[0].message.content
    out["whole_finish"] = r.choices[0].finish_reason
    out["usage"] = r.usage.completion_tokens if r.usage else None
    text, finish, chunks = "", None, 0
    for ch in c.chat.completions.create(
        model="seer",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        chunks += 1
        for choice in ch.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    out["streamed"] = text
    out["stream_finish"] = finish
    out["chunks"] = chunks
    return out


def case_home_assistant(c):
    # Home Assistant's llama_cpp / OpenAI conversation setup probes the
    # server with a dummy tool and a tiny answer, streamed and not.
    tools = [
        {
            "type": "function",
            "function": {
                "name": "HassTurnOn",
                "description": "Turns on a device",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    msgs = [
        {"role": "system", "content": "You are a voice assistant for Home Assistant."},
        {"role": "user", "content": "Hello"},
    ]
    r = c.chat.completions.create(model="seer", messages=msgs, tools=tools, max_tokens=3)
    out = {
        "finish": r.choices[0].finish_reason,
        "tool_calls": r.choices[0].message.tool_calls,
        "text": r.choices[0].message.content,
        "completion_tokens": r.usage.completion_tokens,
    }
    finish, text = None, ""
    for ch in c.chat.completions.create(
        model="seer", messages=msgs, tools=tools, max_tokens=3, stream=True
    ):
        for choice in ch.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    out["stream_finish"] = finish
    out["stream_text"] = text
    return out


def case_wrong_key(c):
    try:
        c.models.list()
    except openai.AuthenticationError as e:
        return {"status": e.status_code, "message": str(e)}
    return {"status": 200}


def case_image(c, path):
    import base64

    data = base64.b64encode(open(path, "rb").read()).decode()
    r = c.chat.completions.create(
        model="seer",
        max_tokens=16,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/jpeg;base64,{data}"},
                    },
                ],
            }
        ],
    )
    return {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason}


def case_leave_mid_stream(c):
    stream = c.chat.completions.create(
        model="seer",
        max_tokens=2000,
        messages=[{"role": "user", "content": "Tell me a very long story about a dragon."}],
        stream=True,
    )
    got = ""
    for ch in stream:
        for choice in ch.choices:
            got += choice.delta.content or ""
        if len(got) > 20:
            break
    stream.close()
    return {"received": got}


def main():
    base, key, case = sys.argv[1], sys.argv[2], sys.argv[3]
    c = client(base, key)
    if case == "basics":
        out = case_basics(c)
    elif case == "home_assistant":
        out = case_home_assistant(c)
    elif case == "wrong_key":
        out = case_wrong_key(client(base, "not-the-key"))
    elif case == "image":
        out = case_image(c, sys.argv[4])
    elif case == "leave_mid_stream":
        out = case_leave_mid_stream(c)
    else:
        raise SystemExit(f"unknown case {case}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
