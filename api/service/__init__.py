"""The query service: IVOA TAP/ADQL, cone search, spectrum download and the QA page."""
