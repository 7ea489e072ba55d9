"""Results in, tables and pictures out. Never imports ray."""
