"""plasmatrace: plasma-pool batch traceability from donor to consignee and back.

Parse, open a unit of work, call one service or query, render. Messages and errors go to stderr; tables, JSON and
CSV go to stdout. `core` holds the app, its groups and the unit of work; `output` the renderers; every other module
holds the commands of one or a few groups and registers them when imported.
"""

from cli import (  # noqa: F401  (imported for the commands they register)
    audit,
    donors,
    imports,
    lookback,
    manufacturing,
    pools,
    recalls,
    reports,
    setup,
    site,
    trace,
)
from cli.core import app

__all__ = ["app"]
