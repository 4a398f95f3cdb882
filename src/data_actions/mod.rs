//! Data actions Genesys Architect flows call (SKELETON: filled in by the data actions issue).
