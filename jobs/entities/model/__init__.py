"""The trained sequence model of the local extractor: medications (Chemical) and conditions (Disease).

``tokenize`` (tokens with exact offsets, sentences), ``dictionary`` and ``features`` (what the CRF
sees), ``predict`` (the shipped ``entities.crfsuite``, loaded once per process), ``postprocess``
(abbreviations defined in the text), ``train`` (rebuilds the model from public corpora; README.md).
"""
