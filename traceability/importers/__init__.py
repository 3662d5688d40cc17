"""Import files (SPEC §6): one module per kind of file, and the machinery every kind shares.

- ``donors.py``, ``donations.py``, ``results.py``, ``pool_members.py``, ``consignees.py``: each holds its row type
  (a dataclass, read by name), its thorough parser (every problem of a row), its fast parser (a valid row read
  straight from its fields), its loader (resolve a chunk of rows against the database and write them), and the
  one :class:`~traceability.importers.spec.ImportSpec` that describes the kind with them.
- ``registry.py``: ``ImportKind`` (the names on the command line) and ``SPECS``, every kind's spec.
- ``load.py``: ``import_file``, the entry point: file digest, earlier imports, audit events, savepoint, report.
- ``job.py``: the state of one import: counts, rejects, conflicts, duplicates across chunks.
- ``pipeline.py``: chunks read ahead and rows written one chunk late, when the database's bulk writer allows.
- ``readers.py``: CSV and JSON files to numbered records; ``cells.py``: parsing the cells every kind shares;
  ``rejects.py``: the rejects file of ``--skip-invalid``.

Everything that differs between SQLite and PostgreSQL (bulk writes, key-set lookups, pipelining) is in
:mod:`traceability.db`.

For developers: adding an import kind is one new module here, modelled on ``consignees.py`` (a row dataclass with
``line``, ``key`` and ``label``; ``parse_*``, ``fast_*`` and ``load_*``; a ``SPEC`` naming its columns, table, key
column and conflict hint), and one entry in ``registry.py`` (its ``ImportKind`` member and its ``SPEC`` in the
list). The CLI's ``import`` command, the rejects file, duplicate and conflict handling and the audit events then
work for it unchanged; a loader writes its new rows through ``job.writing(...)`` and looks up keys with
``job.among(...)``.
"""
