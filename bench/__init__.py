"""avokit's benchmarks: speed, size and quality targets, each writing bench/results/<name>.json and .md."""
