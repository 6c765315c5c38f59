"""Configuration and the terminal registry: loading, validating (check) and where it comes from."""
