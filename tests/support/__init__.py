"""Real parts the tests, the benchmarks and the soak share (a PostgreSQL server, ...)."""
