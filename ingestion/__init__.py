"""pinpipe: ingestion stages (emulate, bronze, ...) and the CLI over them."""

import os

# The Rust crates under deltalake log warnings to stderr themselves, from the moment it is imported
# (an AWS region looked up and not found, retries): what they mean reaches the user as one line of ours.
os.environ.setdefault("RUST_LOG", "error")
