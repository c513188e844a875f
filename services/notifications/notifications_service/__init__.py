"""The notifications service: alerts the agencies that must act."""
