# The tenants of inventory/lab-seed.py (the lab seed): two small control planes on the seed;
# acme's cluster has the lab's tenant worker t1 (`metalseed lab up --seed` boots it).
tenants = {
    "acme": {"profile": "small", "labels": {"team": "payments"}, "workers": ["t1"]},
    "globex": {"profile": "small"},
}
