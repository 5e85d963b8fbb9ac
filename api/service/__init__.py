"""The query service: TAP/ADQL, cone search, spectrum download and the QA page (docs/query_service.md)."""
