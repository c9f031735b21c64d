"""What every service and the gateway must agree on: events, errors, bus topology, Mongo access, config."""
