"""One module per workload of `make bench`, each with run(b: Bench)."""
