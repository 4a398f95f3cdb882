//! Typed Genesys Cloud client (SKELETON: filled in by the Genesys client issue).
