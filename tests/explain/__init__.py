"""Tests of the explain stage."""
