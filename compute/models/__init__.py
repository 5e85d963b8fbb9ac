"""Model weights and the small data they were trained on (see PROVENANCE.md)."""
