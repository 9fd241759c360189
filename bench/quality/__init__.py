"""Quality studies, one package per study (bench/quality/README.md)."""
