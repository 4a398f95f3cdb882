//! JSON mechanisms more than one capability uses, so that none of them has to import another.
//!
//! - [`schema`]: JSON Schemas compiled once at load (data-action inputs and outputs, ingested
//!   events) and their violations as `details` entries of the error body.

pub mod schema;

pub use schema::Schema;
