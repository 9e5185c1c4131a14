"""Worker jobs, run as ``python -m jobs <kind> --document-id ID --attempt N`` in the container."""
