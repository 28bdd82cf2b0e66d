"""goldenloop's own secret detector: regexes for known token formats, credential
assignments, and a high-entropy fallback with an allowlist for ids and hashes.

Every finding is replaced with ``<SECRET_TYPE_N>`` (same value → same placeholder within
a case) and reported with a fingerprint so it can be found in a vault and rotated; the
value itself is never printed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    #: The regex group holding the secret (0: the whole match).
    group: int = 0


def _re(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# A value that is already redacted or a template variable is not a secret.
_PLACEHOLDER_VALUE: Final = r"(?![<$*{%]|x{3,}|\.\.\.)"

#: In priority order: when two detectors overlap, the earlier one wins.
DETECTORS: Final[tuple[Detector, ...]] = (
    Detector(
        "PRIVATE_KEY",
        _re(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]{0,20000}?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"|[A-Za-z0-9+/=\s:,-]*)"
        ),
    ),
    Detector("JWT", _re(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    Detector(
        "AWS_ACCESS_KEY",
        _re(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[0-9A-Z]{16}\b"),
    ),
    Detector(
        "AWS_SECRET_KEY",
        _re(
            r"(?i:aws_?secret(?:_?access)?_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
            r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        1,
    ),
    Detector("ANTHROPIC_KEY", _re(r"\bsk-ant-[A-Za-z0-9_-]{20,}")),
    Detector("OPENAI_KEY", _re(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    Detector(
        "GITHUB_TOKEN", _re(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})")
    ),
    Detector("SLACK_TOKEN", _re(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    Detector(
        "SLACK_WEBHOOK",
        _re(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}"),
    ),
    Detector("STRIPE_KEY", _re(r"\b(?:sk|rk|whsec)_(?:live|test)_[A-Za-z0-9]{16,}")),
    Detector("GOOGLE_API_KEY", _re(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    Detector(
        "BEARER_TOKEN",
        _re(rf"(?i:\bbearer)\s+{_PLACEHOLDER_VALUE}([A-Za-z0-9._~+/-]{{12,}}=*)"),
        1,
    ),
    Detector(
        "URL_PASSWORD",
        _re(rf"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:{_PLACEHOLDER_VALUE}([^\s@/]{{3,}})@"),
        1,
    ),
    Detector(
        "PASSWORD",
        _re(
            r"(?i:\b(?:password|passwd|passphrase|pwd))[\"']?\s*(?:[:=]|=>)\s*"
            rf"[\"']?{_PLACEHOLDER_VALUE}([^\s\"',;]{{3,}})"
        ),
        1,
    ),
    Detector(
        "PASSWORD",
        # "my password is hunter2": only values with a digit or symbol, so that
        # "the password is incorrect" is left alone.
        _re(
            r"(?i:\b(?:password|passwort|mot de passe|contraseña)\s+(?:is|was|ist|est|es)"
            r"\s*:?\s*)[\"']?"
            rf"{_PLACEHOLDER_VALUE}((?=[^\s\"']*[\d!@#$%^&*?])[^\s\"',;]{{4,}})"
        ),
        1,
    ),
    Detector(
        "CREDENTIAL",
        _re(
            r"(?i:\b(?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|client[_-]?secret"
            r"|secret[_-]?key|private[_-]?token|refresh[_-]?token|x-api-key))[\"']?\s*(?:[:=]|=>)\s*"
            rf"[\"']?{_PLACEHOLDER_VALUE}([A-Za-z0-9._~+/=-]{{8,}})"
        ),
        1,
    ),
)

_TOKEN: Final = re.compile(r"(?<![A-Za-z0-9+/=_.-])[A-Za-z0-9+/=_.-]{20,}(?![A-Za-z0-9+/=_.-])")
_SEPARATORS: Final = re.compile(r"[-_./+=]+")
_HEX: Final = re.compile(r"^[0-9a-fA-F]+$")
_UUID: Final = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
#: Hex lengths that are ids or hashes, not secrets: short prompt hashes (≤ 12), span
#: ids (16), Mongo ids (24), trace ids / md5 (32), sha1 / git (40), sha256 (64).
ALLOWED_HEX_LENGTHS: Final = frozenset({16, 24, 32, 40, 64})
DEFAULT_ALLOWLIST: Final[tuple[re.Pattern[str], ...]] = (
    _UUID,
    re.compile(r"^(?:sha1|sha256|sha512|md5)[:-][0-9a-fA-F]+$"),
    re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?Z?)?$"),
)


def shannon_entropy(text: str) -> float:
    """Bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_high_entropy(token: str, allowlist: Sequence[re.Pattern[str]] = DEFAULT_ALLOWLIST) -> bool:
    """A random-looking token that is not an allowed id or hash."""
    if any(p.match(token) for p in allowlist):
        return False
    core = token.strip("=")
    if _HEX.match(core):
        return (
            len(core) > 12
            and len(core) not in ALLOWED_HEX_LENGTHS
            and (shannon_entropy(core) >= 3.0)
        )
    parts = _SEPARATORS.split(core)
    # Slugs, file names, model versions: made of short pieces, not one random run.
    if max((len(p) for p in parts), default=0) < 16:
        return False
    has_digit = any(c.isdigit() for c in core)
    has_upper = any(c.isupper() for c in core)
    has_lower = any(c.islower() for c in core)
    if not has_digit or not (has_upper or has_lower):
        return False
    # Random base62/base64 of length n has close to log2(n) bits per character;
    # words and identifiers repeat letters far more.
    entropy = shannon_entropy(core)
    ceiling = math.log2(min(len(core), 64))
    if has_upper and has_lower:
        return entropy >= max(3.5, 0.82 * ceiling)
    return len(core) >= 24 and entropy >= max(3.4, 0.8 * ceiling)


@dataclass(frozen=True)
class SecretMatch:
    kind: str
    start: int
    end: int
    value: str

    @property
    def fingerprint(self) -> str:
        """sha256 prefix of the value: find it in a vault without printing it."""
        return hashlib.sha256(self.value.encode("utf-8")).hexdigest()[:12]


def find_secrets(
    text: str,
    *,
    high_entropy: bool = True,
    allowlist: Sequence[re.Pattern[str]] = DEFAULT_ALLOWLIST,
) -> list[SecretMatch]:
    """Non-overlapping secrets in ``text``, in order of position."""
    found: list[SecretMatch] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    for detector in DETECTORS:
        for match in detector.pattern.finditer(text):
            start, end = match.span(detector.group)
            value = match.group(detector.group).rstrip()
            end = start + len(value)
            if not value or not free(start, end):
                continue
            found.append(SecretMatch(detector.kind, start, end, value))
            taken.append((start, end))
    if high_entropy:
        for match in _TOKEN.finditer(text):
            token = match.group(0).rstrip(".")
            start, end = match.start(), match.start() + len(token)
            if free(start, end) and is_high_entropy(token, allowlist):
                found.append(SecretMatch("HIGH_ENTROPY", start, end, token))
                taken.append((start, end))
    found.sort(key=lambda m: m.start)
    return found


def secret_kinds() -> list[str]:
    return sorted({d.kind for d in DETECTORS} | {"HIGH_ENTROPY"})


def mentions(text: str, values: Iterable[str]) -> list[str]:
    """Which of ``values`` occur literally in ``text``."""
    return [v for v in values if v and v in text]
