"""Private layer of sklearn_hyperkernel (docs/architecture.md)."""
