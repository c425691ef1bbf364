"""Sharing: SMART Health Links (sender and receiver) and SMART Health Cards (issuer, verifier).

HL7 SMART Health Cards and Links IG STU1; CMS Kill the Clipboard. docs/sharing.md.
"""
