"""Checkpoints: the file format (:mod:`~pedattr.checkpoint.format`), the conversion of the
authors' released checkpoint (:mod:`~pedattr.checkpoint.convert`), models by name
(:mod:`~pedattr.checkpoint.pretrained`) and the hub layout with its model card
(:mod:`~pedattr.checkpoint.hub`, :mod:`~pedattr.checkpoint.card`)."""
