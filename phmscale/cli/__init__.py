"""The `phmscale` command line: one module per verb group, each thin (parse, call, print)."""
