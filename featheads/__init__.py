"""featheads: the product's own package, above the four rooms (featurize, store, heads, blend).

`featheads.core` holds what every room shares (error types, CLI helpers, JSON and version helpers) and imports
none of the rooms; `featheads.app` composes rooms (the demo) and may import all of them.
"""
