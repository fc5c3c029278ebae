"""Generate a synthetic tool-calling data set for tuneloop's tool_calls example: a store's support agent
that looks up orders, starts returns and checks stock, in OpenAI's fine-tuning format (`tools` per row,
assistant `tool_calls`, `tool` results).

Three kinds of conversation: the user asks, the agent calls a tool, and the row ends on the call (what the
model learns to emit); the same with the tool's result and the agent's final answer; and questions no tool
is needed for, answered in text. A few malformed rows (arguments that are not JSON, an undeclared tool, a
call never answered) show the data stage's checks. One random.Random(seed): the same arguments always give
the same file.

    python examples/tool_calls/generate.py [--out PATH] [--n 240] [--seed 0]
"""

import argparse
import json
import random
from pathlib import Path

TOOLS = [
    {"type": "function", "function": {
        "name": "lookup_order", "description": "Status and delivery date of an order",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["order_id"],
                       "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{5}$"}}}}},
    {"type": "function", "function": {
        "name": "start_return", "description": "Open a return for an order",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["order_id", "reason"],
                       "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{5}$"},
                                      "reason": {"enum": ["damaged", "wrong_item", "too_small", "too_large", "changed_mind"]}}}}},
    {"type": "function", "function": {
        "name": "check_stock", "description": "Whether a product is in stock at a store",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["product", "city"],
                       "properties": {"product": {"enum": ["blender", "headphones", "webcam", "jacket", "backpack", "monitor"]},
                                      "city": {"enum": ["Leeds", "Porto", "Lyon", "Graz", "Turin"]}}}}},
]
SYSTEM = "You are the support agent of the Acme store. Use the tools to look up orders, start returns and check stock."
REASONS = {"damaged": ["it arrived broken", "the box was crushed and it is damaged"], "wrong_item": ["you sent the wrong item", "this is not what I ordered"],
           "too_small": ["it is too small", "the size is too small for me"], "too_large": ["it is too big", "it is too large"],
           "changed_mind": ["I changed my mind", "I do not need it any more"]}
STATUS = ["shipped, arriving {day}", "out for delivery today", "being packed, ships {day}", "delivered on {day}"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
FAQ = [("What are your opening hours?", "Our stores are open 9:00 to 19:00, Monday to Saturday."),
       ("Do you ship abroad?", "Yes, we ship to every EU country; delivery takes 3 to 5 working days."),
       ("How long is the warranty?", "Every product has a two-year warranty from the delivery date."),
       ("Can I pay by bank transfer?", "Yes: choose bank transfer at checkout and pay within seven days."),
       ("Thanks, that is all!", "You are welcome. Have a nice day!")]


def order_id(rng: random.Random) -> str:
    return rng.choice("ABCDEFGH") + rng.choice("KLMNPRST") + f"{rng.randrange(100000):05d}"


def call(rng: random.Random, name: str, arguments: dict) -> dict:
    return {"id": f"call_{rng.randrange(16**8):08x}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def conversation(rng: random.Random) -> list[dict]:
    kind = rng.choice(["order", "return", "stock"])
    if kind == "order":
        oid = order_id(rng)
        ask = rng.choice(["Where is my order {o}?", "Any news on order {o}?", "Has {o} shipped yet?", "Status of my order {o} please"]).format(o=oid)
        made = call(rng, "lookup_order", {"order_id": oid})
        result = {"order_id": oid, "status": rng.choice(STATUS).format(day=rng.choice(DAYS))}
        answer = f"Your order {oid} is {result['status']}."
    elif kind == "return":
        oid, reason = order_id(rng), rng.choice(list(REASONS))
        ask = rng.choice(["I want to return order {o}: {r}.", "Order {o} - {r}, can I send it back?", "Please start a return for {o}, {r}."]).format(
            o=oid, r=rng.choice(REASONS[reason]))
        made = call(rng, "start_return", {"order_id": oid, "reason": reason})
        result = {"return_id": f"R{rng.randrange(10**6):06d}", "label": "emailed"}
        answer = f"I opened return {result['return_id']} for order {oid}; the shipping label is in your inbox."
    else:
        product = rng.choice(["blender", "headphones", "webcam", "jacket", "backpack", "monitor"])
        city = rng.choice(["Leeds", "Porto", "Lyon", "Graz", "Turin"])
        ask = rng.choice(["Is the {p} in stock in {c}?", "Does your {c} store have the {p}?", "Can I pick up a {p} in {c} today?"]).format(p=product, c=city)
        made = call(rng, "check_stock", {"product": product, "city": city})
        count = rng.randrange(0, 6)
        result = {"in_stock": count}
        answer = f"The {city} store has {count} {product}{'s' if count != 1 else ''} in stock." if count else f"Sorry, the {city} store is out of {product}s."
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask},
                {"role": "assistant", "content": None, "tool_calls": [made]}]
    if rng.random() < 0.5:  # the row ends on the call: the model learns to make it
        return messages
    return [*messages, {"role": "tool", "tool_call_id": made["id"], "content": json.dumps(result)},
            {"role": "assistant", "content": answer}]


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 8 == 7:
            question, reply = FAQ[(i // 8) % len(FAQ)]
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{question} (ticket {rng.randrange(10**4)})"},
                        {"role": "assistant", "content": reply}]
        else:
            messages = conversation(rng)
        out.append({"tools": TOOLS, "messages": messages})
    # Malformed rows, caught by the data stage with the field named.
    bad = conversation(random.Random(seed + 1))
    bad[2]["tool_calls"][0]["function"]["arguments"] = "{order_id: AB12345"
    undeclared = conversation(random.Random(seed + 2))
    undeclared[2]["tool_calls"][0]["function"]["name"] = "refund_now"
    unanswered = [*conversation(random.Random(seed + 3))[:3], {"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Sorry!"}]
    return out + [{"tools": TOOLS, "messages": m} for m in (bad, undeclared, unanswered)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("conversations.jsonl"))
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.out, "w") as handle:
        for row in rows(args.n, args.seed):
            handle.write(json.dumps(row) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
