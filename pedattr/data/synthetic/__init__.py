"""The generated benchmark: seeded pedestrian-like figures with ground-truth boxes
(:mod:`pedattr.data.synthetic.generator`)."""
