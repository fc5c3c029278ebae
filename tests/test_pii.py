"""PII redaction: each detector catches its values, leaves look-alikes alone, and counts what it took."""

from collections import Counter

import pytest

from tuneloop.pii import DEFAULT_PLACEHOLDERS, PII_TYPES, Redactor

REDACTOR = Redactor()
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

FOUND = [  # (type, text, text after redaction)
    ("email", "Write to maria.lopez+orders@example.co.uk today.", "Write to [EMAIL] today."),
    ("email", "cc: ben_carter99@mail.example.com", "cc: [EMAIL]"),
    ("phone", "Call +1 415-555-0134 now", "Call [PHONE] now"),
    ("phone", "Call (020) 7946 0958 now", "Call [PHONE] now"),
    ("phone", "Call +44 20 7946 0958 now", "Call [PHONE] now"),
    ("phone", "Call 415.555.0134 now", "Call [PHONE] now"),
    ("phone", "Call +49 30 1234567 now", "Call [PHONE] now"),
    ("phone", "Call 07700 900123 now", "Call [PHONE] now"),
    ("phone", "Call 1-800-555-0199, ext 12", "Call [PHONE], ext 12"),
    ("phone", "tel:+14155550134", "tel:[PHONE]"),
    ("credit_card", "Card 4111 1111 1111 1111 please", "Card [CREDIT_CARD] please"),
    ("credit_card", "Card 5555-5555-5555-4444.", "Card [CREDIT_CARD]."),
    ("credit_card", "Amex 378282246310005 ok", "Amex [CREDIT_CARD] ok"),
    ("iban", "IBAN GB82 WEST 1234 5698 7654 32.", "IBAN [IBAN]."),
    ("iban", "Pay to DE89370400440532013000 today", "Pay to [IBAN] today"),
    ("ipv4", "Blocked from 192.168.0.1, why?", "Blocked from [IP], why?"),
    ("ipv4", "Server 8.8.8.8.", "Server [IP]."),
    ("ipv6", "Host 2001:0db8:85a3:0000:0000:8a2e:0370:7334 is down", "Host [IP] is down"),
    ("ipv6", "Host 2001:db8::1.", "Host [IP]."),
    ("ipv6", "Loopback ::1 works", "Loopback [IP] works"),
    ("national_id", "My SSN is 123-45-6789.", "My SSN is [NATIONAL_ID]."),
    ("national_id", "NI number QQ 12 34 56 C here", "NI number [NATIONAL_ID] here"),
    ("national_id", "NI number AB123456C here", "NI number [NATIONAL_ID] here"),
    ("url_credentials", "Hook https://bob:hunter2@example.com/x", "Hook https://[CREDENTIALS]@example.com/x"),
    ("api_key", "Leaked sk-proj-abc123def456ghi789jkl012 oops", "Leaked [API_KEY] oops"),
    ("api_key", "AWS AKIAIOSFODNN7EXAMPLE key", "AWS [API_KEY] key"),
    ("api_key", "git ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8", "git [API_KEY]"),
    ("api_key", "slack xoxb-1234567890-abcdefghij", "slack [API_KEY]"),
    ("api_key", "maps AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6q" + " x", "maps [API_KEY] x"),
    ("api_key", f"Bearer {JWT}", "Bearer [API_KEY]"),
    ("api_key", "api_key = 'a1b2c3d4e5f6g7h8i9j0k1l2m3n4'", "api_key = '[API_KEY]'"),
    ("api_key", "Token: Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1.", "Token: [API_KEY]."),
    ("person", "Thanks, Maria Lopez", "Thanks, [NAME]"),
    ("person", "It broke.\nRegards,\nJohn Smith\nAcme Ltd", "It broke.\nRegards,\n[NAME]\nAcme Ltd"),
    ("person", "Best, Ana", "Best, [NAME]"),
    ("person", "Cheers,\nTom", "Cheers,\n[NAME]"),
    ("person", "Hi, my name is Maria Lopez and my order is late", "Hi, my name is [NAME] and my order is late"),
    ("person", "This is Ben Carter from billing", "This is [NAME] from billing"),
    ("person", "KIND REGARDS,\nJosé Müller-Lüdenscheidt", "KIND REGARDS,\n[NAME]"),
    ("person", "Regards, Dr. Jane Doe", "Regards, Dr. [NAME]"),
    ("person", "İSTANBUL office. Thanks, Maria", "İSTANBUL office. Thanks, [NAME]"),  # "İ" lower-cases to 2 chars
]

LEFT_ALONE = [  # (type, text that only looks like one)
    ("phone", "In 2024 we doubled sales."),
    ("phone", "Order 88231-XK is late."),
    ("phone", "See ticket #A12345."),
    ("phone", "It cost 1,299.00 last week."),
    ("phone", "Ordered on 2024-05-01 and 01.05.2024."),
    ("phone", "Room 12, floor 3, for 555 people."),
    ("phone", "Order 1234567 shipped."),
    ("phone", "Pi is 3.14159265."),
    ("phone", "A town of 1.299.000 people."),
    ("phone", "Ship to ZIP 94105-1234."),
    ("credit_card", "Card 4111 1111 1111 1112 please"),
    ("credit_card", "Number 1234567890123456 please"),
    ("iban", "IBAN GB82 WEST 1234 5698 7654 33."),
    ("iban", "Model XY12 ABCD EFGH is out."),
    ("ipv4", "Update to version 1.2.3 now."),
    ("ipv4", "Address 999.1.1.1 is wrong."),
    ("ipv4", "Release 1.2.3.4.5 is out."),
    ("ipv6", "Meet at 10:30:45 today."),
    ("ipv6", "MAC 00:1A:2B:3C:4D:5E."),
    ("ipv6", "Use std::vector here."),
    ("national_id", "Ids 000-12-3456, 666-12-3456 and 912-34-5678."),
    ("national_id", "Id 123-00-4567 and 123-45-0000."),
    ("national_id", "Id GB123456A and DQ123456C."),
    ("url_credentials", "See https://example.com/users/bob@example.com."),
    ("url_credentials", "Clone https://bob@example.com/repo."),
    ("email", "Mail me @ home or at user@localhost."),
    ("api_key", "Key sk-short is fine."),
    ("api_key", "Our task-management-system-for-everyone-2024 launch."),
    ("api_key", "token: abcdefghijklmnopqrstuvwxyzabcdef"),
    ("api_key", "key: 1234567890123456789012345"),
    ("person", "Thanks, Support Team"),
    ("person", "Thanks, Customer Service"),
    ("person", "Thanks,\nAcme Support"),
    ("person", "This is The third time I ask."),
    ("person", "thanks, i will try again"),
    ("person", "Best Practices for returns."),
    ("person", "This is urgent, Thanks!"),
    ("person", "I spoke to Maria Lopez yesterday."),  # the documented gap: no cue, no name found
]


@pytest.mark.parametrize("kind, text, expected", FOUND)
def test_detector_finds_its_values(kind, text, expected):
    assert Redactor(types=[kind]).redact(text) == (expected, Counter({kind: 1}))
    assert REDACTOR.redact(text) == (expected, Counter({kind: 1}))  # no other detector gets there first


@pytest.mark.parametrize("kind, text", LEFT_ALONE)
def test_detector_leaves_look_alikes(kind, text):
    redacted, counts = Redactor(types=[kind]).redact(text)
    assert redacted == text and counts == Counter()


def test_must_not_match_list_survives_every_detector():
    text = "In 2024 order 88231-XK (#A12345) cost 1,299.00 on 2024-05-01; version 1.2.3, room 12."
    assert REDACTOR.redact(text) == (text, Counter())


def test_text_without_pii_comes_back_as_the_same_string():
    text = "My parcel arrived damaged, thanks for checking. Order 88231-XK."
    redacted, counts = REDACTOR.redact(text)
    assert redacted is text
    assert counts == Counter()


def test_counts_per_type_and_no_original_value_left():
    values = {
        "maria@example.com": "email",
        "ben@example.org": "email",
        "+44 20 7946 0958": "phone",
        "4111 1111 1111 1111": "credit_card",
        "GB82 WEST 1234 5698 7654 32": "iban",
        "10.0.0.12": "ipv4",
        "123-45-6789": "national_id",
        "Maria Lopez": "person",
    }
    text = (
        "Refund maria@example.com (cc ben@example.org), call +44 20 7946 0958. Card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, from 10.0.0.12, SSN 123-45-6789.\nThanks,\nMaria Lopez"
    )
    redacted, counts = REDACTOR.redact(text)
    assert counts == Counter(values.values())
    for value in values:
        assert value not in redacted
    assert redacted.endswith("Thanks,\n[NAME]")


def test_first_detector_to_claim_a_span_wins():
    # The URL's "user:pass@host" is not also an email; digits inside a key or an email are no phone.
    url = "https://bob:pw@mail.example.com"
    assert REDACTOR.redact(url) == ("https://[CREDENTIALS]@mail.example.com", Counter(url_credentials=1))
    assert REDACTOR.redact("secret=a1b2c3d4e5f6a7b8c9d0e1f24155550134") == ("secret=[API_KEY]", Counter(api_key=1))
    assert REDACTOR.redact("Text 4155550134@txt.example.com") == ("Text [EMAIL]", Counter(email=1))


def test_overlapping_finds_of_one_detector_count_once_and_the_longest_wins():
    assert REDACTOR.redact("key=sk-abc123def456ghi789jkl012+more") == ("key=[API_KEY]", Counter(api_key=1))
    assert REDACTOR.redact("Yours sincerely, Ana") == ("Yours sincerely, [NAME]", Counter(person=1))


def test_placeholders_are_never_matched_again():
    redactor = Redactor(placeholders={"email": "+1 415-555-0134"})
    assert redactor.redact("mail a@b.com") == ("mail +1 415-555-0134", Counter(email=1))
    once, _ = REDACTOR.redact("Thanks,\nAna\nhttps://u:p@h.io 192.168.1.1 a@b.com")
    assert REDACTOR.redact(once) == (once, Counter())


def test_placeholders_are_configurable_per_type():
    redactor = Redactor(placeholders={"email": "<mail>", "ipv6": "<ip6>"})
    redacted, _ = redactor.redact("a@b.com on ::1 and 10.0.0.1")
    assert redacted == "<mail> on <ip6> and [IP]"


def test_only_the_chosen_types_are_redacted():
    redacted, counts = Redactor(types=["email"]).redact("a@b.com or +1 415-555-0134")
    assert redacted == "[EMAIL] or +1 415-555-0134"
    assert counts == Counter(email=1)


@pytest.mark.parametrize("kwargs", [{"types": ["email", "passport"]}, {"placeholders": {"name": "[N]"}}])
def test_unknown_type_raises_and_names_the_allowed_ones(kwargs):
    with pytest.raises(ValueError, match="allowed: " + ", ".join(PII_TYPES)):
        Redactor(**kwargs)


def test_every_type_has_a_default_placeholder():
    assert set(DEFAULT_PLACEHOLDERS) == set(PII_TYPES)


@pytest.mark.parametrize("text, name", [
    ("Please call me.\n\n-- James Smith", "James Smith"), ("Thanks\n— Ana Ruiz", "Ana Ruiz"), ("Hi\n\n--\nJames Smith", "James Smith"),
    ("Regards,\nJohn Smith", "John Smith"), ("Best,\nMaria Lopez", "Maria Lopez"), ("ok – Tom Baker\n", "Tom Baker"),
])
def test_signatures_after_a_dash_or_a_sign_off_are_redacted(text, name):
    redacted, found = Redactor(PII_TYPES, {}).redact(text)
    assert name not in redacted and found["person"] == 1 and DEFAULT_PLACEHOLDERS["person"] in redacted


@pytest.mark.parametrize("text", ["error -- Please help", "x -- Acme Support", "pick 2--3 items", "model — Blender Pro 3000 is broken"])
def test_dashes_in_running_text_are_not_names(text):
    assert Redactor(PII_TYPES, {}).redact(text)[0] == text


def test_the_data_report_counts_exactly_the_placeholders_in_the_output(tmp_path):
    """The shipped example through the data stage: every redaction the report counts is in the splits, and
    no signature line with a name is left."""
    import json
    import re
    from pathlib import Path

    from tuneloop.config import DataConfig, TaskConfig
    from tuneloop.data.prepare import prepare

    source = Path(__file__).resolve().parents[1] / "examples" / "ticket_triage" / "tickets.jsonl"
    report = prepare([source], tmp_path, DataConfig(), TaskConfig())
    texts = [m["content"] for split in ("train", "val", "test") for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()
             for m in json.loads(line)["messages"]]
    assert report["pii_redacted"].get("person", 0) > 0
    for kind, placeholder in DEFAULT_PLACEHOLDERS.items():
        assert placeholder not in source.read_text()  # so every placeholder in the output is a redaction
        assert sum(t.count(placeholder) for t in texts) == report["pii_redacted"].get(kind, 0), kind
    assert not [t for t in texts if re.search(r"(?m)^\s*(?:--|—)\s*[A-Z][a-z]+(?: [A-Z][a-z]+)?\s*$", t)]
