"""SQL storage: accounts, keys, reservations, the append-only ledger and the audit log."""
