"""Billing and signup service (Flask): signup, trial, licenses, Stripe."""
