"""The bridge's own model of the world: tenants, declarative sources, the identity ledger, retry jobs, the Fullwhere client."""
