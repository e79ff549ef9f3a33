"""Helpers shared by the test tree: free ports, input feeds, tools, polling.

One copy of each, so that a fix (a port race, a CI rule) lands everywhere at once.
"""
