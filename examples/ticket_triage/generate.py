"""Generate a synthetic support-ticket triage data set for tuneloop examples.

Each row is a chat example: a customer message (user) and a compact JSON triage
answer (assistant) with keys category, priority, product and summary. The data
is meant to exercise the whole pipeline, so besides clean rows it deliberately
contains fake PII, exact duplicates, near-duplicates and malformed rows that the
cleaning steps are expected to catch.

Everything is driven by one random.Random(seed), so the same arguments always
produce byte-identical output.

    python examples/ticket_triage/generate.py [--out PATH] [--n 600] [--seed 0]
"""

import argparse
import json
import random
import sys
from pathlib import Path

CATEGORIES = ["billing", "shipping", "returns", "technical", "account"]

# Products carry a kind so templates only pair with items they make sense for
# (a jacket cannot crash, a blender has no size).
PRODUCTS = {
    "device": ["AeroBlend Pro blender", "Nimbus X2 headphones", "Lumen 4K webcam",
               "Orbit smart speaker", "PulseFit tracker watch", "Glide wireless mouse",
               "Vantage 27 monitor", "Brewline espresso machine"],
    "wear": ["Summit Trail jacket", "Stride Runner shoes", "Cozy Knit sweater",
             "Terra hiking backpack"],
}
PRODUCTS["any"] = PRODUCTS["device"] + PRODUCTS["wear"]

# (message body, summary, product kind or None, fixed priority or None).
# The category is learnable from the cue words; the summary is fixed per
# template so it never leaks PII. A fixed priority marks bodies whose wording
# is itself a high-priority cue ("charged twice", "can't log in at all").
TEMPLATES = {
    "billing": [
        ("I was charged twice for my {product}.", "Double charge on order", "any", "high"),
        ("My card was charged twice for this month's subscription.", "Duplicate subscription charge", None, "high"),
        ("I still haven't seen the refund for my {product} on my statement.", "Refund missing from statement", "any", None),
        ("Could you send me an invoice for my {product} purchase? I need it for an expense report.", "Invoice requested for purchase", "any", None),
        ("The price I was charged for the {product} is higher than the price shown at checkout.", "Charged more than checkout price", "any", None),
        ("My payment keeps getting declined even though my card is valid.", "Payment declined with valid card", None, None),
        ("I'd like to update the billing address that appears on my invoices.", "Update billing address on invoices", None, None),
        ("There is a charge on my statement from your store that I don't recognize.", "Unrecognized charge on statement", None, None),
        ("The discount code wasn't applied when I paid for the {product}. Can you refund the difference?", "Discount not applied, refund difference", "any", None),
        ("Can I get a copy of the receipt for my {product}?", "Receipt copy requested", "any", None),
    ],
    "shipping": [
        ("My {product} was supposed to arrive on Monday but the package still hasn't shown up.", "Package not delivered", "any", None),
        ("The tracking number for my {product} hasn't updated in five days.", "Tracking not updating", "any", None),
        ("The tracking page says my {product} was delivered, but there is no package at my door.", "Marked delivered but not received", "any", None),
        ("Can I change the delivery address for my {product}? It hasn't shipped yet.", "Change delivery address before shipping", "any", None),
        ("The box with my {product} arrived crushed after delivery.", "Package arrived damaged", "any", None),
        ("How long does shipping to Canada usually take for the {product}?", "Shipping time question", "any", None),
        ("The courier left the package with my {product} at a neighbor's house I don't know.", "Package left with unknown neighbor", "any", None),
        ("My {product} shipped but I never got a tracking link.", "No tracking link provided", "any", None),
        ("Only part of my delivery arrived; the {product} is missing from the package.", "Item missing from package", "any", None),
    ],
    "returns": [
        ("I'd like to return the {product}, it's just not what I expected.", "Return request, not as expected", "any", None),
        ("Can I exchange my {product} for a different color?", "Exchange for different color", "any", None),
        ("The {product} I received is the wrong size. Can I exchange it for a larger one?", "Wrong size, exchange requested", "wear", None),
        ("How do I get a return label for the {product}?", "Return label needed", "any", None),
        ("I was sent a {product} but ordered something else entirely, so I want to return it.", "Wrong item received, return requested", "any", None),
        ("Is it too late to return the {product}? I bought it about 40 days ago.", "Return window question", "any", None),
        ("I dropped off the return for my {product} last week. Can you confirm you received it?", "Confirm return was received", "any", None),
        ("The {product} doesn't fit well. What is your exchange policy?", "Exchange policy question for poor fit", "wear", None),
        ("I'd like to exchange my unopened {product} for the newer model.", "Exchange unopened item for newer model", "device", None),
    ],
    "technical": [
        ("My {product} won't turn on anymore, even after charging it overnight.", "Device won't turn on", "device", None),
        ("The companion app crashes every time I try to pair my {product}.", "App crashes during pairing", "device", None),
        ("I keep getting error code E42 on my {product}.", "Error code E42 on device", "device", None),
        ("A firmware update failed halfway and now my {product} is stuck on the logo screen.", "Stuck after failed firmware update", "device", None),
        ("My {product} keeps disconnecting from Bluetooth every few minutes.", "Bluetooth keeps disconnecting", "device", None),
        ("The {product} makes a loud grinding noise and then shuts off.", "Grinding noise then shutdown", "device", None),
        ("After the latest software update, the {product} stopped working with my laptop.", "Stopped working after update", "device", None),
        ("The display on my {product} flickers and sometimes goes black.", "Display flickers and goes black", "device", None),
        ("My {product} shows an error saying the sensor is not detected.", "Sensor not detected error", "device", None),
    ],
    "account": [
        ("I can't log in at all, it says my password is incorrect even after resetting it.", "Login fails after password reset", None, "high"),
        ("The password reset email never arrives in my inbox.", "Password reset email not arriving", None, None),
        ("How do I change the email address on my account?", "Change account email address", None, None),
        ("I'd like to delete my account and all of my data.", "Account deletion request", None, None),
        ("My account got locked after too many login attempts.", "Account locked after login attempts", None, None),
        ("I lost my phone and can't get the two-factor code to sign in.", "Lost two-factor device, cannot sign in", None, None),
        ("Someone else logged into my account, I see orders I didn't place.", "Suspected unauthorized account access", None, "high"),
        ("Can I merge my two accounts into one? I signed up with different emails.", "Merge two accounts", None, None),
        ("I never get the verification email when I try to sign up.", "Verification email not received", None, None),
        ("How do I change the display name on my profile?", "Change profile display name", None, None),
    ],
}

# Priority cue sentences. Medium rows get no cue, so the label follows the text.
HIGH_CUES = ["This is urgent.", "Please fix this ASAP.", "I need this resolved immediately.",
             "Urgent, please help.", "I need an answer as soon as possible."]
LOW_CUES = ["No rush, just wondering.", "Whenever you get a chance is fine.",
            "No hurry at all, just curious.", "Just wondering, whenever you have a moment."]

OPENERS = ["Hi,", "Hello team,", "", "Hello,", "Hey there,", "Good morning,", "Dear support,", ""]
PLAIN_CLOSERS = ["Thanks.", "Thank you!", "", "Cheers", "Regards", "Thanks in advance.", ""]
NAME_CLOSERS = ["Thanks, {name}", "Best,\n{name}", "Kind regards,\n{name}", "Cheers, {name}", "-- {name}"]

FIRST_NAMES = ["Maria", "James", "Aisha", "Chen", "Olivia", "Lukas", "Priya", "Tomás",
               "Hannah", "Kwame", "Sofia", "Daniel", "Yuki", "Fatima", "Ben", "Elena"]
LAST_NAMES = ["Lopez", "Smith", "Khan", "Wei", "Brown", "Müller", "Patel", "García",
              "Johnson", "Mensah", "Rossi", "Okafor", "Tanaka", "Haddad", "Carter", "Novak"]
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]


def fake_name(rng):
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def fake_email(rng, name):
    first, last = name.lower().split()
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(10, 99)}"])
    return f"{local}@{rng.choice(EMAIL_DOMAINS)}"


def fake_phone(rng):
    # Fictional ranges only: US 555-01xx, UK 020 7946 0xxx and 07700 900xxx.
    d = rng.randint(100, 199)
    return rng.choice([
        f"+1 415-555-0{d}", f"(212) 555-0{d}", f"650.555.0{d}",
        f"(020) 7946 0{d}", f"+44 20 7946 0{d}", f"07700 900{d}",
    ])


def fake_order_id(rng):
    if rng.random() < 0.5:
        return f"#{rng.choice('ABCDEFGH')}{rng.randint(10000, 99999)}"
    return f"order {rng.randint(10000, 99999)}-{rng.choice('KMXZ')}{rng.choice('KMXZ')}"


def pick_priority(rng, fixed):
    if fixed:
        return fixed
    return rng.choices(["high", "medium", "low"], weights=[3, 4, 3])[0]


def priority_cue(rng, priority, fixed):
    # Fixed-high bodies already carry their cue; add an extra one only sometimes.
    if priority == "high" and (not fixed or rng.random() < 0.5):
        return rng.choice(HIGH_CUES)
    if priority == "low":
        return rng.choice(LOW_CUES)
    return ""


def pii_parts(rng):
    """Return (extra sentences, closer) for one message; ~40% carry some PII."""
    closer = rng.choice(PLAIN_CLOSERS)
    if rng.random() >= 0.4:
        return [], closer
    name = fake_name(rng)
    kinds = rng.sample(["name", "email", "phone", "order"], k=rng.randint(1, 3))
    sentences = []
    if "order" in kinds:
        sentences.append(rng.choice(["My order number is {}.", "This is about {}.", "Reference: {}."])
                         .format(fake_order_id(rng)))
    if "email" in kinds:
        sentences.append(f"You can reach me at {fake_email(rng, name)}.")
    if "phone" in kinds:
        sentences.append(rng.choice(["Please call me at {}.", "My number is {}."]).format(fake_phone(rng)))
    if "name" in kinds:
        closer = rng.choice(NAME_CLOSERS).format(name=name)
    return sentences, closer


def make_ticket(rng, category):
    """Build one clean (user message, assistant answer dict) pair."""
    body, summary, kind, fixed = rng.choice(TEMPLATES[category])
    product = rng.choice(PRODUCTS[kind]) if kind else None
    priority = pick_priority(rng, fixed)
    middle = [body.format(product=product), priority_cue(rng, priority, fixed)]
    sentences, closer = pii_parts(rng)
    middle = " ".join(p for p in middle + sentences if p)
    sep = rng.choice([" ", "\n", "\n\n"])
    text = sep.join(p for p in [rng.choice(OPENERS), middle] if p)
    if closer:
        text += "\n\n" + closer
    answer = {"category": category, "priority": priority, "product": product, "summary": summary}
    return text, answer


def _dump(obj):
    # ensure_ascii=False keeps names like "Tomás Müller" readable in the file.
    return json.dumps(obj, ensure_ascii=False)


def row_line(user, assistant_content):
    row = {"messages": [{"role": "user", "content": user},
                        {"role": "assistant", "content": assistant_content}]}
    return _dump(row)


def clean_rows(rng, n):
    # Categories are dealt out evenly, then shuffled, so the set stays balanced.
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    rng.shuffle(categories)
    seen, lines = set(), []
    for category in categories:
        # Regenerate accidental repeats so the only duplicates are the planted ones.
        text, answer = make_ticket(rng, category)
        while text in seen:
            text, answer = make_ticket(rng, category)
        seen.add(text)
        lines.append(row_line(text, _dump(answer)))
    return lines


WORD_SWAPS = [("I'd like", "I would like"), ("Can I", "Could I"), ("Thanks", "Thank you"),
              ("Hi,", "Hey,"), ("keeps", "continues"), ("never", "still never"), ("How do I", "How can I")]


def near_duplicate(rng, text):
    """Apply one tiny edit: a word change, extra punctuation or extra whitespace."""
    edit = rng.choice(["word", "punct", "space"])
    if edit == "word":
        for old, new in WORD_SWAPS:
            if old in text:
                return text.replace(old, new, 1)
    if edit == "space" and " " in text:
        at = rng.choice([i for i, c in enumerate(text) if c == " "])
        return text[:at] + "  " + text[at + 1:]
    # Fallback for every edit that could not apply: punctuation always works.
    return text + rng.choice(["!", "!!", " ?", "..."])


def near_duplicate_line(rng, line):
    row = json.loads(line)
    row["messages"][0]["content"] = near_duplicate(rng, row["messages"][0]["content"])
    return _dump(row)


def malformed_rows(rng):
    """One broken row of each kind the pipeline's validation should reject."""
    text, answer = make_ticket(rng, rng.choice(CATEGORIES))
    content = _dump(answer)
    user = {"role": "user", "content": text}
    bot = {"role": "assistant", "content": content}
    full = row_line(text, content)
    return [
        full[: len(full) // 2],                                        # truncated, not JSON
        _dump({"conversation": [user, bot]}),                           # no "messages" key
        _dump({"messages": [user, {"role": "assistant", "content": ""}]}),  # empty answer
        _dump({"messages": [{"role": "user"}, bot]}),                   # message without content
        _dump({"messages": [{"role": "customer", "content": text}, bot]}),  # unknown role
        _dump({"messages": [user]}),                                    # no assistant turn
        _dump([user, bot]),                                             # array, not object
        _dump({"messages": [{"role": "user", "content": ""}, bot]}),    # empty user content
    ]


def insert_after_source(rng, rows, kind, make_line):
    """Insert a row derived from an earlier clean row somewhere after it."""
    pos = rng.randrange(1, len(rows) + 1)
    src = rng.choice([i for i in range(pos) if rows[i][0] == "clean"])
    rows.insert(pos, (kind, make_line(rows[src][1])))


def build(n=600, seed=0):
    """Return [(kind, line)] with kind in clean/dup/near_dup/malformed."""
    rng = random.Random(seed)
    rows = [("clean", line) for line in clean_rows(rng, n)]
    n_dirty = n // 40  # ~15 each for the default 600
    if not rows:
        n_dirty = 0
    for _ in range(n_dirty):
        insert_after_source(rng, rows, "dup", lambda line: line)
    for _ in range(n_dirty):
        insert_after_source(rng, rows, "near_dup", lambda line: near_duplicate_line(rng, line))
    for line in malformed_rows(rng):
        rows.insert(rng.randrange(0, len(rows) + 1), ("malformed", line))
    return rows


def generate(n: int = 600, seed: int = 0) -> list[str]:
    """Return the data set as JSONL lines (strings, since some are malformed)."""
    return [line for _, line in build(n, seed)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("tickets.jsonl"))
    parser.add_argument("--n", type=int, default=600, help="number of clean rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = build(args.n, args.seed)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for _, line in rows)
    counts = {k: sum(1 for kind, _ in rows if kind == k) for k in ["clean", "dup", "near_dup", "malformed"]}
    summary = " ".join(f"{k}={v}" for k, v in counts.items())
    print(f"wrote {len(rows)} rows to {args.out}: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
