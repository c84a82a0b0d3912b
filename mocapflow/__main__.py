"""`python -m mocapflow ...` is the `mocapflow` command."""

from mocapflow.cli import app

app(prog_name="mocapflow")
