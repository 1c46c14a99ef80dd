"""The version of tierwise, in a leaf module: what records it (artefacts, eval reports) imports it
from here, never from the package, whose ``__init__`` imports the router."""

__version__ = "0.1.0"
