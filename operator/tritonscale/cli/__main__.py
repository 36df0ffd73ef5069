"""`python -m tritonscale.cli`: the same as the `tritonscale` command."""

from tritonscale.cli import main

main()
