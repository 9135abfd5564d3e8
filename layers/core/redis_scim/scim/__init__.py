"""The SCIM 2.0 protocol layer (RFC 7643/7644): resources, filters, PATCH, lists, discovery, errors.

Pure: it talks to storage only through `redis_scim.directory.Directory` and never imports boto3 or
redis. `handler.ScimHandler` is the entry point; scim2-models stays behind this package.
"""
