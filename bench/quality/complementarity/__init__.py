"""Complementarity: the ceiling for fusion, three teachers x three domains (bench/quality/README.md)."""
