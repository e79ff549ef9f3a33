"""Test support: in-memory harnesses and helpers."""
