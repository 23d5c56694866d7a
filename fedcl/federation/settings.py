"""Federation settings: the ``[federation]`` table of a fedcl config (defined in :mod:`fedcl.config`)."""

from fedcl.config import FederationConfig, FedRunConfig, fault_schedule

__all__ = ["FederationConfig", "FedRunConfig", "fault_schedule"]
