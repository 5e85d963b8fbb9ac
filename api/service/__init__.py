"""The query service (`skyledger serve`): IVOA TAP 1.1, cone search, spectrum download
and DataLink, and the QA page, over the read path of schema/readpath.py."""
