"""The fusion proof (issue 15): does the fused three-teacher student beat the best single teacher (bench/quality/README.md)."""
