"""The price of crossing tokenizers (issue 31, 3a; bench/quality/README.md)."""
