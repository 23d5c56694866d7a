"""Deployment helpers: TLS certificates and SuperNode keys for a real Flower federation."""
