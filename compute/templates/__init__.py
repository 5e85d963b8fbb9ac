"""Stellar template libraries shipped with skyledger (data only; see ``mileshc/README.md`` and
``emiles/README.md``)."""
