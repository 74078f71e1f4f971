"""Side-by-side benchmarks against the anchor libraries: `python -m benchmarks.<name>`."""
