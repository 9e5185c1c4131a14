"""The ``convert`` job (job_definitions/convert.json): the images the apps show.

``job`` (stored renditions and their rows), ``renditions`` (decode once, orient, cascade of
downscales, write), ``pixels`` (normalisation to 8-bit sRGB).
"""
