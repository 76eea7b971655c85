"""`python -m mirror`: the same command line as the `mirror` script."""
from .ui.cli import main

main()
