"""A hand-made corpus of short documents on distinct topics, with queries labelled by their relevant chunk.

Most documents have two sections, so their chunks are "<file>::0" and "<file>::1". Product and error
codes come in near-twins (XR-4400 / XR-4100, E-1042 / E-1024), as in a real catalogue. Three kinds of query:
- keyword: an exact code ("E-1042") that embeddings confuse with its twin; only lexical matching pins it;
- paraphrase: no content word shared with the relevant passage (nor with any other), so only the
  embedding can find it;
- plain: both should work.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = {
    "router.md": """# XR-4400 router
The XR-4400 is our dual-band wireless router with four gigabit ports. It ships with firmware 3.2 and
handles up to 64 connected devices. The XR-4400 costs 129 euros.

## Factory reset
Hold the recessed button on the back of the XR-4400 for ten seconds until the lights blink amber.
All settings return to their defaults and the admin password becomes the one printed on the label.
""",
    "pricing.md": """# Pricing policy
The prices of all our devices and hardware are reviewed every quarter. A price change is announced
on the website two weeks before it takes effect. How much a product costs depends on its tier.

## Price protection
Customers who bought hardware within 30 days before a price drop are refunded the difference on request.
""",
    "modem.md": """# XR-4100 cable modem
The XR-4100 is a DOCSIS cable modem for connecting a home to the internet over coaxial cable. The XR-4100
costs 89 euros and comes with a two-year warranty.

## Installation
Screw the coaxial cable into the back of the modem, wait for the online lamp to stop blinking, then
connect your computer with an ethernet cable.
""",
    "washer.md": """# Washing machine faults
When the washing machine displays error E-1024, the door lock has failed and the drum will not turn.
Unplug the machine for a minute; if the error persists, the lock must be replaced by a technician.

## Detergent
Use one cap of liquid detergent for a normal load and half a cap for a small load.
""",
    "dishwasher.md": """# Dishwasher troubleshooting
If the dishwasher shows error E-1042, the drain pump is blocked. Remove the filter at the bottom of the
tub, rinse it under the tap and clear any debris from the pump cover.

## Loading
Place plates facing the centre and glasses upside down on the top rack. Never put wooden boards or cast
iron pans inside.
""",
    "appliance-errors.md": """# What error codes mean
Household appliances report faults with short codes on their display. A code tells the technician which
part failed, such as a sensor, a heater or a motor. Write the code down before calling support.

## Warranty repairs
Repairs during the two-year warranty are free when the appliance was used as the manual describes.
""",
    "photosynthesis.md": """# Photosynthesis
Plants capture sunlight with chlorophyll in their chloroplasts and use that energy to convert water and
carbon dioxide into glucose, releasing oxygen as a by-product.

## Respiration
At night plants still respire: they burn some of the glucose they stored and release carbon dioxide.
""",
    "bees.md": """# The waggle dance
A honeybee forager that found nectar returns to the colony and performs a waggle dance. The angle of the
dance relative to vertical encodes the direction of the nectar relative to the sun, and its duration
encodes the distance.

## Swarming
In spring a colony raises a new queen and the old queen leaves with half of the workers to found a colony.
""",
    "volcano.html": """<html><head><title>Volcanoes</title><style>body { color: red }</style></head>
<body><h1>Volcanic eruptions</h1>
<p>Magma is stored in a chamber beneath the volcano. When pressure from dissolved gases builds, magma
rises through vents and erupts as lava, ash and pyroclastic flows.</p>
<script>console.log("not text");</script>
<h2>Monitoring</h2>
<p>Seismometers record swarms of small earthquakes, and satellites measure ground swelling before an eruption.</p>
</body></html>
""",
    "tax.txt": """Self-assessment deadlines

Online self-assessment tax returns for the previous tax year must be filed by 31 January. Paper returns
are due by 31 October. A late return costs an immediate 100 pound penalty.

Payments on account are due on 31 January and 31 July.
""",
    "git.md": """# Rebasing versus merging
git rebase replays your commits on top of another branch, giving a linear history, while git merge records
a merge commit that joins two branches. Never rebase commits that others have already pulled.

## Interactive rebase
git rebase -i lets you squash, reorder or reword commits before you push them.
""",
    "sourdough.md": """# Sourdough starter
Feed the starter every day with equal weights of flour and water. It is ready to bake with when it
doubles within six hours and smells pleasantly sour.

## Baking
Bake the loaf in a preheated cast iron pot at 250 degrees Celsius, lid on for twenty minutes, then lid off.
""",
    "marathon.md": """# Marathon training
A sixteen-week marathon plan builds the weekly long run from 12 to 32 kilometres, with one recovery week
in every four. Most runs are at an easy conversational pace.

## Tapering
Cut mileage by about forty percent in the final three weeks before the race to arrive rested.
""",
    "support.jsonl": [
        {"id": "password", "title": "Resetting your account password",
         "text": "Click 'Forgot password' on the sign-in page and enter your email address. The reset link expires after 24 hours."},
        {"id": "shipping", "title": "Shipping times",
         "text": "Orders placed before 2 pm ship the same working day. Standard delivery takes three to five working days."},
    ],
}

# (query, relevant chunk id, kind)
QUERIES = [
    ("What does error E-1042 mean?", "dishwasher.md::0", "keyword"),
    ("E-1042", "dishwasher.md::0", "keyword"),
    ("XR-4400 price", "router.md::0", "plain"),
    ("XR-4100 price", "modem.md::0", "plain"),
    ("How does foliage make food out of sunshine?", "photosynthesis.md::0", "paraphrase"),
    ("How do insects tell hive-mates where flowers are?", "bees.md::0", "paraphrase"),
    ("molten rock bursting out of a mountain", "volcano.html::0", "paraphrase"),
    ("When is the deadline for filing an online tax return?", "tax.txt::0", "plain"),
    ("Should I rebase commits others have pulled?", "git.md::0", "plain"),
    ("How often do I feed a sourdough starter?", "sourdough.md::0", "plain"),
    ("How much should I reduce mileage before a marathon?", "marathon.md::1", "plain"),
    ("I forgot my password, how do I reset it?", "support.jsonl#password::0", "plain"),
    ("How long does standard delivery take?", "support.jsonl#shipping::0", "plain"),
    ("Are repairs free under warranty?", "appliance-errors.md::1", "plain"),
]


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in DOCS.items():
        if name.endswith(".jsonl"):
            content = "".join(json.dumps(row) + "\n" for row in content)
        (root / name).write_text(content)
    return root
