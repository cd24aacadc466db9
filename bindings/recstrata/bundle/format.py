"""Names and version numbers of the bundle format (docs/bundle-format.md).

The native reader's counterparts are in processor/src/bundle/manifest.h.
"""

FORMAT = "recstrata.bundle"      # Manifest.format
MANIFEST_FILE = "bundle.json"    # at the root of a bundle directory; written last
DENSE_DIR = "dense"              # the dense stage (a SavedModel)
STORE_DIR = "store"              # the tiered store holding every sub-table
SIGNATURE = "serving_default"    # the bundle's and the dense stage's signature name

FORMAT_VERSION = 2               # newest: adds SparseFeature.slices
FORMAT_VERSION_NO_SLICES = 1     # what a bundle without slices is written as (older readers)
KEY_SCHEMA_VERSION = 1           # docs/embedding-keys.md
