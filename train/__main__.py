"""`python -m train ...` is the `gogooku` command (handy in a checkout without the console script)."""

from train.cli import app

app()
