"""The demo's settings, in a module without heavy imports: the CLI reads them for ``--help``."""

#: The demo's training settings; any of them can be overridden as ``section.key=value``.
DEMO_SETTINGS: dict = {
    "model": {
        "arch": "alm",
        "backbone": "torchvision:mobilenet_v2",
        "input_size": [128, 64],
        "pyramid_dim": 128,
    },
    "data": {"workers": 2},
    "optim": {"lr": 1.0e-3, "batch_size": 32, "epochs": 6, "lr_step": 4},
    "run": {"device": "auto", "tensorboard": False},
}
#: Images generated per split.
DEMO_SPLITS = {"train": 4000, "val": 500, "test": 1000}
