"""pinpipe: ingestion stages (emulate, bronze, ...) and the CLI over them."""
