"""The ranking service's state and math, without Ray: pools, labels, round records, per-shard
results (FAISS indexes in the object store) and global strategy scores over streamed shards.

The Ray parts (Serve deployments in ``services/``, the ranking actor in ``actors/``) call in
here, so everything they persist can be read and tested without a cluster.
"""
