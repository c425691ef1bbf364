"""HealthMesh benchmarks: ``python -m bench`` (``make bench``). Never run by the test suite.

- ``bench.ingest``: ``healthmesh load`` and HTTP transactions beside a raw COPY baseline;
- ``bench.read``: read/vread/health under wrk against the server and ``bench.reference_app``;
- ``bench.multiply``: clone a data set to any size for scale runs.

See docs/PERFORMANCE.md.
"""
