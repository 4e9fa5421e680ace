"""The retrieval stage of two-stage recommend: an index over a version's item vectors, built
before the version takes requests (:mod:`service.retrieval.index`, :mod:`service.retrieval.build`).
"""
