"""Explain stage: class activation maps and the pseudo-masks made from them."""
