"""Kubernetes itself: the pinned components' configuration schemas, cluster objects (pure) and
applying them with the official client."""
