"""The catalog service: the plan's commitments, evidenced and published."""
