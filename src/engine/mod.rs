//! The stage engine: runs dependency-ordered stages and keeps their local state.
//!
//! It knows nothing about AWS or Kubernetes. A stage is an id, the ids it
//! depends on ([`graph`]) and an async closure ([`run`]); the engine walks
//! the graph in parallel (forward to build, reverse to tear down), reports
//! through a [`progress::Reporter`], and offers a lock and a journal per stack
//! ([`state`]). What each stage does lives in `src/stages/`.

pub mod fleet_progress;
pub mod graph;
pub mod progress;
pub mod run;
pub mod state;
pub mod store;
