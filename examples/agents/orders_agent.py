#!/usr/bin/env python3
"""A support agent for an order desk, written as teams write them: the official `openai` SDK,
a system prompt and two tools of its own, its own loop. runner tests it without a change to
its code: runner sets OPENAI_BASE_URL and OPENAI_API_KEY, which the SDK reads, and answers every
request with the model under test (`-m`).

The protocol: one JSON line per user message on stdin, {"type": "user", "content": "..."};
one JSON line back on stdout, {"type": "reply", "content": "..."} (or {"type": "error",
"message": "..."}). Logs go to stderr.

AGENT_STREAM=1 makes every request streamed (stream_options.include_usage), as many agents do.
"""

import json
import os
import sys

from openai import OpenAI

SYSTEM = (
    "You are the order desk's assistant. Look orders up with lookup_order before you say "
    "anything about one, and refund only when the customer asks for a refund."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "The status and total of an order, by its id (e.g. A100).",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund_order",
            "description": "Refunds an order in full.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
]
ORDERS = {
    "A100": {"status": "shipped", "total_usd": 42.5},
    "B200": {"status": "processing", "total_usd": 19.0},
}
MAX_ROUNDS = 6


def run_tool(name, arguments):
    order = ORDERS.get(str(arguments.get("order_id", "")).upper())
    if order is None:
        return {"error": "no such order"}
    if name == "lookup_order":
        return order
    if name == "refund_order":
        return {"refunded_usd": order["total_usd"]}
    return {"error": f"unknown tool {name}"}


def complete(client, model, messages, stream):
    """The model's reply: its text and its tool calls (as the API's dicts)."""
    if not stream:
        message = client.chat.completions.create(model=model, messages=messages, tools=TOOLS).choices[0].message
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in message.tool_calls or []
        ]
        return message.content, calls
    text, calls = [], {}
    chunks = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    for chunk in chunks:
        if not chunk.choices:
            continue  # the usage chunk
        delta = chunk.choices[0].delta
        if delta.content:
            text.append(delta.content)
        for piece in delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = piece.id or call["id"]
            if piece.function and piece.function.name:
                call["function"]["name"] += piece.function.name
            if piece.function and piece.function.arguments:
                call["function"]["arguments"] += piece.function.arguments
    return ("".join(text) or None), [calls[i] for i in sorted(calls)]


def answer(client, model, messages, stream):
    for _ in range(MAX_ROUNDS):
        content, calls = complete(client, model, messages, stream)
        if not calls:
            messages.append({"role": "assistant", "content": content or ""})
            return content or ""
        messages.append({"role": "assistant", "content": content, "tool_calls": calls})
        for call in calls:
            try:
                arguments = json.loads(call["function"]["arguments"] or "{}")
            except json.JSONDecodeError:
                arguments = {}
            result = run_tool(call["function"]["name"], arguments)
            print(f"tool {call['function']['name']} -> {result}", file=sys.stderr, flush=True)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
    raise RuntimeError(f"still calling tools after {MAX_ROUNDS} rounds")


def main():
    client = OpenAI()
    model = os.environ.get("AGENT_MODEL", "gpt-4o-mini")
    stream = os.environ.get("AGENT_STREAM") == "1"
    messages = [{"role": "system", "content": SYSTEM}]
    for line in sys.stdin:
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("type") != "user":
            continue
        messages.append({"role": "user", "content": event["content"]})
        try:
            reply = {"type": "reply", "content": answer(client, model, messages, stream)}
        except Exception as err:  # the turn's error, not the agent's end
            reply = {"type": "error", "message": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
