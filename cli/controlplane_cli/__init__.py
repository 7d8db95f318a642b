"""``controlplane``: the control plane's command line for CI and people."""

__version__ = "0.1.0"
