"""The query service (`skyledger serve`): IVOA TAP, cone search, spectrum download and the QA page."""
