"""Tenant control planes hosted on seed clusters: pure parts (specs, size profiles, datastore
prefixes, placement across seeds). Nothing here talks to a host or a cluster."""
