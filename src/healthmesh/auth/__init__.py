"""SMART App Launch 2.2 authorization: tokens, clients, scopes, identity (docs/security.md)."""
