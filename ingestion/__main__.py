"""``python -m ingestion`` is the ``pinpipe`` command."""

from ingestion.cli import main

main()
