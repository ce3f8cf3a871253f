"""Ray Serve deployments of the ranking service: the gRPC ingress and the two batched scorers.

They hold no ranking math: that is ``gestalt_al.service`` and ``gestalt_al.ranking``.
"""
