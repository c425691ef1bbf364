"""FHIRPath functions (spec §5), one module per spec section; importing registers them."""

from . import (  # noqa: F401
    conversion,
    existence,
    fhir,
    filtering,
    math,
    strings,
    subsetting,
    types,
    utility,
)
