"""Terminal transports: TCP, MQTT and SMS through the modem, each a thin adapter onto intake."""
