"""Checkpoints: the file format (:mod:`~pedattr.checkpoint.format`) and the conversion of the
authors' released checkpoint (:mod:`~pedattr.checkpoint.convert`)."""
