//! Outbound HTTP to upstreams (SKELETON: filled in by the upstream issue).
