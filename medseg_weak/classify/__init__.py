"""Stage 1: the density / quality classifier trained across hospitals."""
