"""The ``gestalt_al.v1`` gRPC API: modules generated from ``protos/`` by ``make``."""
