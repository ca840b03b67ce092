"""The demo's settings, in a module without heavy imports: the CLI reads them for ``--help``."""

#: The demo's training settings; any of them can be overridden as ``section.key=value``.
DEMO_SETTINGS: dict = {
    "model": {
        "arch": "alm",
        "backbone": "torchvision:mobilenet_v2",
        "input_size": [128, 64],
        "pyramid_dim": 128,
        # The box regressors start at zero (every box starts as the central one) and learn at a
        # tenth of the rate: with PyTorch's init and the full rate, Adam drives eq. 3's tanh and
        # sigmoid into saturation within the first steps and the boxes stick to the image border
        # (README, "pedattr demo").
        "box_init": "zero",
    },
    "data": {"workers": 2},
    "optim": {"lr": 1.0e-3, "batch_size": 32, "epochs": 6, "lr_step": 4, "box_lr_scale": 0.1},
    "run": {"device": "auto", "tensorboard": False},
}
#: Images generated per split.
DEMO_SPLITS = {"train": 4000, "val": 500, "test": 1000}
