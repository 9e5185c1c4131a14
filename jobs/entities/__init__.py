"""The ``entities`` job (job_definitions/entities.json): medical entities in DetectEntitiesV2 shape.

``job`` (stored entities.json and entity rows), ``detect`` (picks the backend), ``local`` and
``rules`` (the local extractor and its lexicons in ``data/``), ``comprehend`` (Amazon Comprehend
Medical, with request splitting and retries).
"""
