"""Use cases called by the HTTP views, the CLI and the dispatcher; each takes the Gateway first."""
