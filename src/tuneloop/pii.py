"""PII detection and redaction, shared by every stage that writes text a person may have typed (the data
stage's rows, the monitor's feedback export): personal data becomes a placeholder before anything else sees it.

Covered, each by a pattern plus a checksum or parser where one exists: email addresses; phone
numbers (international and national formats, 7-15 digits); credit-card numbers (Luhn-checked);
IBANs (mod-97-checked); IPv4 and IPv6 addresses (checked with `ipaddress`); US SSNs and UK National
Insurance numbers; the user:password part of URLs; API keys (OpenAI, AWS, GitHub, Slack, Google,
JWTs, and any long letters-and-digits token after "key", "token", "secret" or "password"); and
person names, but only right after a sign-off or introduction cue ("Thanks, Maria Lopez",
"Regards,\\nJohn Smith", "my name is Ana", "This is Ben Carter") or alone on a signature line after a
dash ("-- James Smith", "— Ana Ruiz").

Known gap, plainly: names anywhere else ("I spoke to Maria Lopez yesterday") are NOT found. That
needs a named-entity model, and none can be installed offline here from a trustworthy source, so
only the cue-based check is done. Read redacted data as "fewer names", not "no names". Also not
covered: postal addresses, dates of birth, passport and licence numbers, other countries' ids,
non-ASCII email addresses, passwords shorter than 24 characters, and phone numbers written as one
bare run of fewer than 10 digits (such runs are order ids and amounts far more often than phones).

Detectors run in a fixed order: URL credentials and API keys, email, IBAN, card, national id, IPv6,
IPv4, phone, name. Whatever one claims is blanked out for the ones after it, so the first detector
to claim a span wins and pieces of one value are never re-matched as another. Placeholders go in
only at the end, so they are never matched either. Each detector has a cheap prefilter (an "@" for
email, enough digits for the numeric ones, ...) because most rows hold no PII and the data
pipeline has a rows/s budget.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

PII_TYPES = (
    "email", "phone", "credit_card", "iban", "ipv4", "ipv6", "national_id", "url_credentials", "api_key", "person",
)
DEFAULT_PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CREDIT_CARD]",
    "iban": "[IBAN]",
    "ipv4": "[IP]",
    "ipv6": "[IP]",
    "national_id": "[NATIONAL_ID]",
    "url_credentials": "[CREDENTIALS]",
    "api_key": "[API_KEY]",
    "person": "[NAME]",
}

Span = tuple[int, int]
_MASK = "\0"  # stands in for claimed characters; no pattern below consumes it


class _Row(NamedTuple):
    """The text still unclaimed (claimed characters masked) and what the prefilters look at."""

    text: str
    lower: str
    digits: int

    @classmethod
    def of(cls, text: str) -> _Row:
        return cls(text, text.lower(), _count_digits(text))


class _Detector(NamedTuple):
    kind: str
    wanted: Callable[[_Row], bool]  # cheap prefilter: False means the pattern cannot match
    find: Callable[[_Row], Iterable[Span]]


def _contains_any(text: str, words: tuple[str, ...]) -> bool:
    for word in words:  # a plain loop: `any()` over a generator costs more than the searches
        if word in text:
            return True
    return False


def _count_digits(text: str) -> int:
    encoded = text.encode("utf-8", "ignore")
    return len(encoded) - len(encoded.translate(None, b"0123456789"))  # one C pass; str has no such delete


def _matches(pattern: re.Pattern[str], valid: Callable[[str], bool] | None = None) -> Callable[[_Row], Iterator[Span]]:
    """A finder yielding the spans of `pattern` whose text passes `valid`."""

    def find(row: _Row) -> Iterator[Span]:
        for match in pattern.finditer(row.text):
            if valid is None or valid(match.group()):
                yield match.span()

    return find


def _at_cues(pattern: re.Pattern[str], cues: tuple[str, ...], row: _Row) -> Iterator[re.Match[str]]:
    """Matches of `pattern` (which begins with one of `cues`, in any case), tried only where a cue is.

    `re` cannot skip ahead in a case-insensitive pattern, so it would try it at every character;
    `str.find` on the lower-cased text is many times faster, and cue words are rare.
    """
    text, lower, _ = row  # locals: this loop runs for most rows
    if len(lower) != len(text):  # a few letters ("İ") lower-case to two: positions would drift
        yield from pattern.finditer(text)
        return
    for cue in cues:
        position = lower.find(cue)
        while position != -1:
            match = pattern.match(text, position)  # lookbehinds still see the text before `position`
            if match:
                yield match
            position = lower.find(cue, position + 1)


# --- credentials in URLs and API keys -------------------------------------------------------------

# Patterns below start with a literal or one character class where they can: then `re` skips
# straight to candidate positions instead of trying the whole pattern at every character. So a
# "not inside a word" check comes after the first character: `\d(?<![\w-].)` reads "a digit, and
# the character before it is no word character or dash".
_URL_CREDENTIALS = re.compile(r"://(?P<cred>[^\s:/@\0]+:[^\s/@\0]+)@")


def _find_url_credentials(row: _Row) -> Iterator[Span]:
    for match in _URL_CREDENTIALS.finditer(row.text):
        yield match.span("cred")  # scheme and host stay: only user:password is personal


_KNOWN_KEY = re.compile(
    r"""
    (?:sk-(?=[\w-]*\d)[\w-]{20,}                # OpenAI
      | AKIA[0-9A-Z]{16}                       # AWS access key id
      | gh[pousr]_[A-Za-z0-9]{36}              # GitHub
      | xox[baprs]-[A-Za-z0-9-]{10,}           # Slack
      | AIza[\w-]{35}                          # Google
      | eyJ[\w-]+\.eyJ[\w-]+\.[\w-]*           # JWT: two base64 JSON objects and a signature
    )(?![\w-])
    """,
    re.X | re.ASCII,
)
_KEY_HINTS = ("sk-", "AKIA", "_", "xox", "AIza", "eyJ")  # every `_KNOWN_KEY` match holds one
_CUED_KEY = re.compile(
    r"""(?i:key|token|secret|passw(?:or)?d)["']?[ \t]*[:=][ \t]*["']?(?P<value>[\w+/.=-]{24,})""", re.ASCII
)
_KEY_CUES = ("key", "token", "secret", "passw")
_DIGIT = re.compile(r"\d", re.ASCII)
_LETTER = re.compile(r"[A-Za-z]")


def _may_hold_key(row: _Row) -> bool:
    if _contains_any(row.text, _KEY_HINTS):
        return True
    return ("=" in row.text or ":" in row.text) and _contains_any(row.lower, _KEY_CUES)


def _find_api_keys(row: _Row) -> Iterator[Span]:
    text = row.text
    if _contains_any(text, _KEY_HINTS):
        for match in _KNOWN_KEY.finditer(text):
            start = match.start()
            if start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_-"):  # "task-..." is no key
                yield match.span()
    for match in _at_cues(_CUED_KEY, _KEY_CUES, row):
        value = match.group("value").rstrip(".")  # a sentence's full stop is not part of the key
        if len(value) >= 24 and _DIGIT.search(value) and _LETTER.search(value):
            yield match.start("value"), match.start("value") + len(value)  # keep the "token=" cue


# --- email, bank and card numbers, national ids -----------------------------------------------------

_EMAIL = re.compile(
    r"[\w.%+-](?<![\w.%+-].)[\w.%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])", re.ASCII
)

_IBAN = re.compile(r"[A-Z](?<!\w.)[A-Z]\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b", re.ASCII)


def _iban_ok(candidate: str) -> bool:
    """ISO 13616: country and check digits moved to the end, letters as 10-35, mod 97 leaves 1."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# Printed layouts only (one run, 4-4-4-4[-3], Amex 4-6-5): "any digits with gaps" would join
# neighbouring numbers ("000-12-3456 666-12-3456") into a candidate that passes Luhn one time in ten.
_CARD = re.compile(
    r"\d(?<![\d-].)(?:\d{12,18}|\d{3}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?|\d{3}([ -])\d{6}\2\d{4,5})(?!\d)",
    re.ASCII,
)


def _luhn_ok(candidate: str) -> bool:
    total = 0
    for position, char in enumerate(reversed([c for c in candidate if c.isdigit()])):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


_SSN = re.compile(r"\d(?<![\w-].)\d{2}([- ])\d{2}\1\d{4}(?![\w-])", re.ASCII)
_NINO = re.compile(  # UK National Insurance number; the letters HMRC never issues are left out
    r"[A-CEGHJ-TW-Z](?<!\w.)[A-CEGHJ-NP-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ)[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D](?!\w)",
    re.ASCII,
)


def _ssn_ok(candidate: str) -> bool:
    """Area 000, 666 and 9xx, group 00 and serial 0000 are never issued."""
    area, group, serial = candidate[:3], candidate[4:6], candidate[7:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_find_ssns = _matches(_SSN, _ssn_ok)
_find_ninos = _matches(_NINO)


def _find_national_ids(row: _Row) -> Iterator[Span]:
    if row.digits >= 9:
        yield from _find_ssns(row)
    yield from _find_ninos(row)


# --- IP addresses: loose candidates, `ipaddress` decides ------------------------------------------

_IPV6 = re.compile(
    r"[0-9A-Fa-f:](?<![\w:.].)[0-9A-Fa-f:]*:[0-9A-Fa-f:]*(?:\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)",
    re.ASCII,
)
_IPV4 = re.compile(r"\d(?<![\w.].)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)", re.ASCII)  # "1.2.3.4.5" is a version


def _is_ipv4(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)  # rejects octets over 255 and leading zeros
    except ValueError:
        return False
    return True


def _is_ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)  # rejects times ("10:30:45") and MAC addresses
    except ValueError:
        return False
    return True


# --- phone numbers -------------------------------------------------------------------------------

_PHONE = re.compile(
    r"""
    [+(\d](?<![\w+\#@/.,-].)                   # first character, not inside a word, id, path, decimal
    (?=(?:[ .()+-]{0,3}\d){6})                 # 6 more digits ahead, or it is too short: fail early
    (?:(?<=\+)\d{1,3}[ .-]?(?:\(\+?\d{1,5}\)[ .-]?)?\d    # "+" country code, maybe an area code in brackets
      |(?<=\()\+?\d{1,5}\)[ .-]?\d                # area code in brackets, also the UK "(0)"
      |(?<=\d)                                   # or a plain digit
    )
    \d{0,14}(?:[ .-]\d{1,15}(?:([ .-])\d{1,15}(?:\1\d{1,15}){0,4})?)?
                                               # digit groups; after the first, one separator kind,
                                               # so "2024-05-01 415-555-0134" stays two candidates
    (?![\w@]|[.,:/-]\d)                        # not followed by more of a number ("1,299.00")
    """,
    re.X | re.ASCII,
)
_DATE = re.compile(r"\d{4}([-.])\d{1,2}\1\d{1,2}|\d{1,2}([-.])\d{1,2}\2\d{2,4}", re.ASCII)
_GROUPS = re.compile(r"\d+", re.ASCII)


def _is_phone(candidate: str) -> bool:
    """Shape rules on top of the pattern; each one removes a common non-phone number."""
    digits = _count_digits(candidate)
    if not 7 <= digits <= 15:
        return False
    if candidate[0] in "+(":
        return True  # a country or area code marks it as a phone
    if candidate.isdigit():
        return digits >= 10  # shorter bare runs are order ids and amounts
    if _DATE.fullmatch(candidate):
        return False
    groups = _GROUPS.findall(candidate)
    if [len(group) for group in groups] in ([3, 2, 4], [5, 4]):
        return False  # an SSN (valid or not) or a US ZIP+4 code: no phone plan writes numbers so
    if len(groups[0]) <= 3 and all(len(group) == 3 for group in groups[1:]):
        return False  # thousands grouping: "1.299.000", "12 345 678"
    if "." in candidate and len(groups) < 3:
        return False  # a decimal number
    if "-" not in candidate and "." not in candidate:
        return digits >= 9  # spaces alone easily join two unrelated short numbers
    return True


# --- person names after a cue --------------------------------------------------------------------

_SIGN_OFFS = (
    r"thanks(?:\s+(?:again|so\s+much|a\s+lot|in\s+advance))?|thank\s+you(?:\s+(?:again|so\s+much|in\s+advance))?"
    r"|regards|best(?:\s+wishes)?|cheers|sincerely|yours\s+(?:sincerely|truly|faithfully)|respectfully"
)
_WORD = r"[^\W\d_]+(?:['’-][^\W\d_]+)*"
_PERSON = re.compile(
    rf"""
    (?i:\b(?:{_SIGN_OFFS})[ \t]*(?:[,!][ \t]*(?:\r?\n\s*)?|\.?[ \t]*\r?\n\s*)    # sign-off, then "," or a line break
       |\b(?:name[ ]is|this[ ]is)[ \t]+)                                        # introduction ("my name is")
    (?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?[ \t]+)?                                # a title is kept
    (?![a-z])(?P<name>{_WORD}(?:[ \t]+{_WORD}){{0,2}})                          # lower-case: give up early
    """,
    re.X,
)
# Every `_PERSON` match starts with one of these (any case); "kind regards" is found at "regards".
_PERSON_CUES = ("thank", "regards", "best", "cheers", "sincerely", "yours", "respectfully", "name is", "this is")
# An e-mail signature after a dash ("-- James Smith", "— Ana Ruiz"), the name alone up to the end of its line.
_DASHED = re.compile(
    rf"""
    (?<!\S)(?:--|—|–)[ \t]*(?:\r?\n[ \t]*)?                                   # the dash, maybe on its own line
    (?P<name>{_WORD}(?:[ \t]+{_WORD}){{0,2}})(?=[ \t]*(?:\r?\n|$))               # then only the name on the line
    """,
    re.X,
)
_DASH_CUES = ("--", "—", "–")
# Words that end a team or company sign-off: "Thanks, Acme Support" names no person.
_ORG_WORDS = frozenset(
    """
    Team Support Customer Customers Service Services Care Sales Billing Account Accounts Help Helpdesk Desk Admin
    Management Department Dept Staff Office Inc Ltd LLC GmbH Corp Company Group
    """.split()
)
# Capitalised words that follow the cues but are not names (sentence starts and the like).
_NOT_NAMES = _ORG_WORDS | frozenset(
    """
    Manager Everyone All Again Advance Guys Folks Mom Dad Sent From
    The A An And Or But For In On At To Of By With My Our Your His Her Their Its This That These Those It
    Is Not No Yes Ok Okay Very So Too Just Really Still Also Please Sorry Hi Hello Hey Dear Sir Madam
    I We You He She They Me Us Them Urgent Important Regarding Re Fwd Thanks Thank Regards Best Cheers
    Sincerely Kind Warm Monday Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yesterday
    """.split()
)
_NON_SPACE = re.compile(r"\S+")


def _is_name_word(word: str) -> bool:
    return len(word) >= 2 and word[0].isupper() and not word[1:].isupper() and word not in _NOT_NAMES


def _find_names(row: _Row) -> Iterator[Span]:
    for match in (*_at_cues(_PERSON, _PERSON_CUES, row), *_at_cues(_DASHED, _DASH_CUES, row)):
        end = None
        for word in _NON_SPACE.finditer(match.group("name")):
            if word.group() in _ORG_WORDS:
                end = None  # "Thanks, Acme Support": a company, not a person
                break
            if not _is_name_word(word.group()):
                break  # "Thanks, Maria from billing": the name stops at "from"
            end = match.start("name") + word.end()
        if end is not None:
            yield match.start("name"), end


# --- the redactor --------------------------------------------------------------------------------

_DETECTORS = (
    _Detector("url_credentials", lambda row: "://" in row.text and "@" in row.text, _find_url_credentials),
    _Detector("api_key", _may_hold_key, _find_api_keys),
    _Detector("email", lambda row: "@" in row.text, _matches(_EMAIL)),
    _Detector("iban", lambda row: row.digits >= 10, _matches(_IBAN, _iban_ok)),  # no country's has fewer
    _Detector("credit_card", lambda row: row.digits >= 13, _matches(_CARD, _luhn_ok)),
    _Detector("national_id", lambda row: row.digits >= 6, _find_national_ids),
    _Detector("ipv6", lambda row: row.text.count(":") >= 2, _matches(_IPV6, _is_ipv6)),
    _Detector("ipv4", lambda row: row.digits >= 4 and row.text.count(".") >= 3, _matches(_IPV4, _is_ipv4)),
    _Detector("phone", lambda row: row.digits >= 7, _matches(_PHONE, _is_phone)),
    _Detector("person", lambda row: _contains_any(row.lower, _PERSON_CUES + _DASH_CUES), _find_names),
)


def _unclaimed(masked: str, spans: list[Span]) -> list[Span]:
    """`spans` in order, without those touching a claimed (masked) character or an earlier span.

    Of spans starting together the longest wins: "key=sk-...+rest" is a known key shape and, longer,
    a cued one.
    """
    if not spans:
        return spans  # the common case: skip the sorting
    kept: list[Span] = []
    for start, end in sorted(set(spans), key=lambda span: (span[0], -span[1])):
        if (not kept or start >= kept[-1][1]) and _MASK not in masked[start:end]:
            kept.append((start, end))
    return kept


def _blank(text: str, spans: list[Span]) -> str:
    """`text` with `spans` (sorted, apart) masked; the length stays, so later spans index the original."""
    pieces, position = [], 0
    for start, end in spans:
        pieces += [text[position:start], _MASK * (end - start)]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


class Redactor:
    """Replaces the PII types it was built with by their placeholders."""

    def __init__(self, types: Iterable[str] = PII_TYPES, placeholders: Mapping[str, str] | None = None):
        """`types`: what to redact (default: all of PII_TYPES); `placeholders`: per-type overrides of
        DEFAULT_PLACEHOLDERS. An unknown type name in either raises ValueError."""
        types = (types,) if isinstance(types, str) else tuple(types)
        placeholders = dict(placeholders or {})
        unknown = sorted((set(types) | set(placeholders)) - set(PII_TYPES))
        if unknown:
            raise ValueError(f"unknown PII type(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(PII_TYPES)}")
        self._detectors = [detector for detector in _DETECTORS if detector.kind in types]
        self._placeholders = {**DEFAULT_PLACEHOLDERS, **placeholders}

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """Return the redacted text and counts per PII type found (never the values)."""
        counts: Counter[str] = Counter()
        row = _Row.of(text)
        found: list[tuple[int, int, str]] = []
        for detector in self._detectors:
            if not detector.wanted(row):
                continue
            spans = _unclaimed(row.text, list(detector.find(row)))
            if not spans:
                continue
            row = _Row.of(_blank(row.text, spans))  # later detectors see only what is left
            found += [(start, end, detector.kind) for start, end in spans]
            counts[detector.kind] += len(spans)
        if not found:
            return text, counts  # the very same string: callers may test identity
        return self._fill(text, found), counts

    def _fill(self, text: str, found: list[tuple[int, int, str]]) -> str:
        pieces, position = [], 0
        for start, end, kind in sorted(found):
            pieces += [text[position:start], self._placeholders[kind]]
            position = end
        pieces.append(text[position:])
        return "".join(pieces)
