"""The policy digest printed on reports: SHA-256 of the policy's canonical JSON."""

from __future__ import annotations

from traceability.rules import DEFAULT_POLICY, Policy, policy_digest


def test_the_same_policy_has_the_same_digest_and_any_change_gives_another() -> None:
    digest = policy_digest(DEFAULT_POLICY)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert policy_digest(Policy()) == digest
    assert policy_digest(Policy(hold_days=61)) != digest
    assert policy_digest(Policy(lookback_months=13)) != digest
