"""What a tenant is, as platform engineers write it in tenants.yaml, and the rules it must follow."""
