"""Recipes built on the library: the demo on generated pedestrians and the paper's experiments.

Nothing in the library imports them."""
