//! JSON mechanisms more than one capability uses, so that none of them has to import another.
//!
//! - [`schema`]: JSON Schemas compiled once at load (data-action inputs and outputs, ingested
//!   events) and their violations as `details` entries of the error body;
//! - [`strict`]: the one reading every JSON body gets (valid JSON, no key written twice in an
//!   object), run by the body extractors of [`crate::error`].

pub mod schema;
pub mod strict;

pub use schema::Schema;
