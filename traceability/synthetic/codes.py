"""How a synthetic site names things; standard library only (the benchmarks' file generator imports it)."""

from __future__ import annotations

NAT_MARKERS = frozenset({"hiv-rna", "hcv-rna", "hbv-dna", "hav-rna", "b19-dna"})
"""Markers a laboratory finds by nucleic acid testing (models.Marker values); the others by serology."""


def din(fin: str, year: int, sequence: int) -> str:
    """A canonical 13-character ISBT 128 DIN: facility number, two-digit year, six-digit sequence."""
    return f"{fin}{year % 100:02d}{sequence % 1_000_000:06d}"


def screening_method(marker: str) -> str:
    """How a laboratory tests a marker, as the results files name it: ``nat`` or ``serology``."""
    return "nat" if marker in NAT_MARKERS else "serology"
