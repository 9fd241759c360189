"""The first quality study: a from-scratch student, CE vs one or two teachers, and its ablations (bench/quality/README.md)."""
