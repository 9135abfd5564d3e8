"""redis-scim: the identity provider's SCIM users and groups, converged into Redis/Valkey ACL users."""

__version__ = "0.1.0"
