"""`python -m phmscale` is the `phmscale` command."""

from phmscale.cli.main import main

main()
