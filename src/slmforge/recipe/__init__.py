"""The recipe: schema, loading with precise errors, cross-field checks, and the step graph."""
