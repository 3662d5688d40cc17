"""`python -m cli`: the same app as the `plasmatrace` command."""

from cli import app

app()
