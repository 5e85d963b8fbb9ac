"""One adapter per compute task: its parameters, its pending query, its loader and the call
into the science package that does the numerics."""
