//! The server's runtime layout: one single-threaded tokio runtime per core, each accepting on
//! its own listening socket bound to the shared port with `SO_REUSEPORT` (see
//! `app::bind_shared`).
//!
//! On a 2-core machine that layout served a data-action hop ≈ 1.3–1.8× faster than the default
//! work-stealing runtime (measured with a throwaway hyper hop; BENCHMARKS.md has the product's
//! figures): a request is accepted, served and its upstream call made on one thread, with no
//! cross-thread wake-ups. Everything shared across
//! threads (caches, breakers, metrics, the store) is `Send + Sync` and lives behind `Arc`s;
//! per-thread resources (HTTP connection pools) are picked with [`worker_index`].

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the server thread running the caller, or `None` off the server threads
/// (background tasks, tests).
pub fn worker_index() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Marks the current thread as server thread `index`.
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
}
