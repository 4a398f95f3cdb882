//! Integrations (placeholder; filled in step 3).

/// An integration.
#[derive(Debug, Clone)]
pub(crate) struct IntegrationRecord;
/// A credential.
#[derive(Debug, Clone)]
pub(crate) struct CredentialRecord;
/// A data action.
#[derive(Debug, Clone)]
pub(crate) struct ActionRecord;

/// Routes of the integrations service (filled in step 3).
pub(crate) fn router() -> axum::Router<std::sync::Arc<super::state::Sim>> {
    axum::Router::new()
}
