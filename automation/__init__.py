"""Stack orchestration: the only package that drives the Pulumi Automation API."""
