# The tenants of inventory/lab-seed.py (the lab seed): two small control planes on the seed.
tenants = {
    "acme": {"profile": "small", "labels": {"team": "payments"}},
    "globex": {"profile": "small"},
}
