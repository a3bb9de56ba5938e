"""fedids: federated, privacy-preserving intrusion detection for IoT networks."""

__version__ = "0.1.0"
