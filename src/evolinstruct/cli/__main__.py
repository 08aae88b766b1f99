"""`python -m evolinstruct.cli`: the same as the `evolinstruct` command."""

from . import app

app()
