"""fedcl: federated, on-device continual learning with frozen pretrained backbones."""

__version__ = "0.1.0"
