"""Images -> frozen backbone -> feature store (`featurize run`), plus OpenFace ingest and super-resolution."""
