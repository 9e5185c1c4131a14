"""The code the worker container runs: one package per job definition in ``job_definitions/``.

    python -m jobs KIND --document-id ID --attempt N     (what every job definition's command is)

``jobs/__main__.py`` is the boundary where our exceptions become exit codes; ``runner.py`` fetches
the original and runs the kind's ``job.run``; ``identify.py`` tells what an upload is from its
bytes (shared by ``extract`` and ``convert``); ``extract/`` text layer, OCR and searchable PDF;
``entities/`` the local extractor and Comprehend Medical; ``convert/`` the renditions.
Nothing in ``pipeline/`` or ``compute/`` imports this package: they start it by its command.
"""
