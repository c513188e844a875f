"""The data the services exchange: event types and their payloads.

These models are the contract between services (and the source of the
AsyncAPI document): a change here is a change of the published format, so
fields are only ever added, and a breaking change gets a new `.vN` type.
"""
