"""HTTP API: Flask blueprints; views parse, call a service, and answer."""
