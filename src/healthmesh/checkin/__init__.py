"""The receiving side of Kill the Clipboard: the clinic check-in (docs/sharing.md, "For the clinic").

scan (a photo, a pasted link or card) → fetch (SSRF-guarded HTTP) → receive (decrypt, verify,
validate) → summary (one screen) → candidates (matching) → importer (one transaction). No HTTP
server code here: api/checkin_routes.py is the web layer.
"""
