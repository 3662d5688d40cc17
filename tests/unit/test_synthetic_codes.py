"""The synthetic site's names are real ones: DINs that parse as ISBT 128, markers the models know."""

from __future__ import annotations

import pytest

from traceability.identifiers import UnitScheme, parse_unit_number
from traceability.models import Marker
from traceability.synthetic.codes import NAT_MARKERS, din, screening_method


@pytest.mark.parametrize(("sequence", "expected"), [(1, "W123426000001"), (999_999, "W123426999999")])
def test_a_synthetic_din_is_a_canonical_isbt128_din_at_both_ends_of_the_sequence(sequence: int, expected: str) -> None:
    number = din("W1234", 2026, sequence)
    assert number == expected
    parsed = parse_unit_number(number)
    assert (parsed.value, parsed.scheme) == (number, UnitScheme.ISBT128)


def test_every_nat_marker_is_a_marker_and_every_other_marker_is_tested_by_serology() -> None:
    assert NAT_MARKERS <= {m.value for m in Marker}
    assert {m.value for m in Marker if screening_method(m.value) == "serology"} == {
        "hbsag",
        "anti-hiv",
        "anti-hcv",
        "syphilis",
    }
