"""metalseed: pyinfra deploys for highly available bare-metal Kubernetes."""

__version__ = "0.1.0"
