//! The Genesys Cloud simulator (SKELETON: filled in by the simulator issue).
