"""fstag: general-purpose audio tagging (FSDKaggle2018-style) with Hydra, Lightning and MLflow."""

__version__ = "0.1.0"
