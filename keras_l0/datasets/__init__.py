"""Data for the examples and tests: a synthetic feature-selection task and
Penn Treebank read from a local folder."""
