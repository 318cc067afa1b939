"""Fallback channels that reach anyone with a phone number or an email address."""
