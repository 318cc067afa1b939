"""Customers' messages coming in: the pipeline every channel's inbound webhook feeds."""
