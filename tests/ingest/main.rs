//! Black-box tests of the event ingest surface, one module per part of it.

mod jwt;
