"""Operations: health port, stats line, watchdog, log events and the operator commands."""
