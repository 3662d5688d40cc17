"""Synthetic sites: one generator for the demo, the benchmarks (`bench/`) and the test factories.

* :mod:`.codes`: how a synthetic site names things (ISBT 128 DINs, how a laboratory tests each marker); standard
  library only, so the benchmarks' file generator loads it without the database stack;
* :mod:`.records`: qualified donors with tested units inserted set-based, and pools whose tests pass and that are
  released through the services.

What it makes passes the rules: every unit is tested with the policy's whole panel, nonreactive; every pool test a
product requires is nonreactive (B19 DNA quantified far under any limit).
"""
