"""The local stack (`make run`): the whole system on one machine, no AWS account, no Docker.

moto serves the template's tables, queues and secret; an HTTP server plays API Gateway for the
same ScimApiFunction handler; an embedded Valkey stands in for the Redis targets.
"""
