"""Storage: dataset ingest and schemas, splits, the Parquet shard store and the model registry."""
