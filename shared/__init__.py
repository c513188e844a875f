"""Common code of the three caj-tracker services.

Only what every service needs lives here: settings, the CloudEvents envelope,
the transactional outbox and its relay, the idempotent consumer, topics,
health, metrics and logging. Nothing in this package knows the plan's domain.
"""
