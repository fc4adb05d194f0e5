"""Integration tests against a real, throw-away SLURM cluster on 127.0.0.1 (see cluster.py)."""
