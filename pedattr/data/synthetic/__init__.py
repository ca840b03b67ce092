"""The generated benchmark: seeded pedestrian-like figures with ground-truth boxes
(:mod:`pedattr.data.synthetic.generator`)."""

from pedattr.data.synthetic.generator import (
    ATTRIBUTES,
    LOCATION_VARYING_ATTRIBUTES,
    generate_sample,
    write_synthetic_dataset,
)

__all__ = [
    "ATTRIBUTES",
    "LOCATION_VARYING_ATTRIBUTES",
    "generate_sample",
    "write_synthetic_dataset",
]
