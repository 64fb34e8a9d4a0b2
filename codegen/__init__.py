"""The sparc:: operators that planned linears are rewritten into, and how they reach a kernel."""
