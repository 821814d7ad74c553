"""`python -m tfresnet.cli`: the `tfresnet` command."""

from tfresnet.cli import run

run()
