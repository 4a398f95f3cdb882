//! The simulator's mutex: a `std` mutex whose poisoning is ignored.
//!
//! Every change the simulator makes under a lock is a few map or list operations, so a handler
//! that panics leaves consistent data behind; a poisoned lock is then used as it is rather than
//! turning every later request into a panic. A [`Lock`] is never held across an await.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A mutex whose poisoning is ignored.
#[derive(Debug, Default)]
pub(crate) struct Lock<T>(Mutex<T>);

impl<T> Lock<T> {
    /// Locks, whether or not a panic poisoned the mutex.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
