"""One module per verb: each wires library pieces from `pipeline` together."""
