"""goldenloop's secret detector: known formats, assignments, entropy, allowlist."""

from __future__ import annotations

import pytest

from goldenloop.golden.secrets import find_secrets, is_high_entropy, secret_kinds, shannon_entropy

GH = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("id AKIAIOSFODNN7EXAMPLE here", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_KEY",
         "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        (f"token {GH}", "GITHUB_TOKEN", GH),
        ("sk-ant-api03-" + "x" * 30, "ANTHROPIC_KEY", "sk-ant-api03-" + "x" * 30),
        ("key sk-proj-" + "Ab1" * 10, "OPENAI_KEY", "sk-proj-" + "Ab1" * 10),
        ("xoxb-123456789012-abcdefghijkl", "SLACK_TOKEN", "xoxb-123456789012-abcdefghijkl"),
        ("sk_live_" + "a1B2" * 6, "STRIPE_KEY", "sk_live_" + "a1B2" * 6),
        ("rk_live_" + "a1B2" * 6, "STRIPE_KEY", "rk_live_" + "a1B2" * 6),
        ("Authorization: Bearer abc.DEF-123_456~xyz", "BEARER_TOKEN", "abc.DEF-123_456~xyz"),
        ("password=hunter2!", "PASSWORD", "hunter2!"),
        ('"password": "c0rrect-horse"', "PASSWORD", "c0rrect-horse"),
        ("mein Passwort ist Sommer2024", "PASSWORD", "Sommer2024"),
        ("postgresql://app:s3cret@db:5432/x", "URL_PASSWORD", "s3cret"),
        ("api_key: 0123abcdEFGH4567", "CREDENTIAL", "0123abcdEFGH4567"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl", "JWT",
         "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl"),
    ],
)  # fmt: skip
def test_known_formats_are_detected(text: str, kind: str, value: str) -> None:
    found = find_secrets(text)
    assert [(m.kind, m.value) for m in found] == [(kind, value)]
    assert text[found[0].start : found[0].end] == value


def test_private_key_block_is_one_secret() -> None:
    block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    found = find_secrets(f"key:\n{block}\nbye")
    assert [(m.kind, m.value) for m in found] == [("PRIVATE_KEY", block)]


def test_truncated_private_key_is_still_caught() -> None:
    found = find_secrets("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC")
    assert found and found[0].kind == "PRIVATE_KEY" and "MIIEvQ" in found[0].value


@pytest.mark.parametrize(
    "token",
    [
        "4bf92f3577b34da6a3ce929d0e0e4736",  # trace id
        "00f067aa0ba902b7",  # span id
        "3fa85f64-5717-4562-b3fc-2c963f66afa6",  # uuid
        "9fceb02d0ae598e95dc970b74767f19372d61af8",  # git sha
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # sha256
        "a9f2",  # prompt hash
        "gpt-4o-mini-2024-07-18",
        "eu-right-of-withdrawal",
        "getUserAccountSettingsForRefund",
        "2026-06-29T14:05:33.123Z",
        "internationalization",
    ],
)
def test_ids_hashes_and_words_are_allowed(token: str) -> None:
    assert not is_high_entropy(token)
    assert find_secrets(f"value {token} end") == []


@pytest.mark.parametrize(
    "token",
    [
        "Zq8XwP3kLm9RtY2vBn7HsD4fGj6KcV1e",
        "k3j9x0q2m8v7c6n5b4z1l0p9o8i7u6y5t4r3",
        "9f8e7d6c5b4a39281716a5b4c3d2e1f0a9b8c7d6e5f4a3b2",
    ],
)
def test_random_tokens_are_high_entropy(token: str) -> None:
    assert is_high_entropy(token)
    assert [m.kind for m in find_secrets(f"the value {token} leaked")] == ["HIGH_ENTROPY"]


def test_placeholders_and_redacted_values_are_not_secrets() -> None:
    text = (
        "password=<SECRET_PASSWORD_1> token: *** Bearer <SECRET_BEARER_TOKEN_1> api_key=${API_KEY}"
    )
    assert find_secrets(text) == []


def test_prose_about_passwords_is_left_alone() -> None:
    assert find_secrets("The password is incorrect, please try again.") == []


def test_fingerprint_is_stable_and_short() -> None:
    a = find_secrets("AKIAIOSFODNN7EXAMPLE")[0]
    b = find_secrets("x AKIAIOSFODNN7EXAMPLE y")[0]
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 12


def test_entropy_and_kind_list() -> None:
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == 2.0
    assert {"JWT", "PRIVATE_KEY", "HIGH_ENTROPY"} <= set(secret_kinds())
