"""Gateway services: keys, metering, rate limits, audit, log redaction, request pipeline."""
